//! Every layout the gateway can ask for comes back aligned, sized and intact through `realloc`,
//! called on the allocator itself (also the test binary's global allocator).

// Allocating by `Layout` and reading the block back cannot be written without `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use infergate_alloc::Mimalloc;

#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

const SIZES: [usize; 13] = [
    1,
    7,
    8,
    24,
    40,
    56,
    1000,
    1024,
    1025,
    3000,
    8192,
    100_000,
    5 << 20,
];
const ALIGNS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 4096, 1 << 16];

fn aligned(ptr: *mut u8, align: usize) -> bool {
    !ptr.is_null() && (ptr as usize).is_multiple_of(align)
}

#[test]
fn every_block_has_its_layouts_alignment_and_size() {
    for align in ALIGNS {
        for size in SIZES {
            let layout = Layout::from_size_align(size, align).expect("a valid layout");
            // Several at once, so blocks further into a page are checked, not only its first.
            let blocks: Vec<*mut u8> = (0..16)
                .map(|i| {
                    // SAFETY: `layout` has a non-zero size.
                    let p = unsafe { ALLOCATOR.alloc(layout) };
                    assert!(aligned(p, align), "{size} bytes aligned to {align}: {p:p}");
                    // SAFETY: the block holds `size` bytes.
                    unsafe { p.write_bytes(i as u8, size) };
                    p
                })
                .collect();
            for (i, p) in blocks.into_iter().enumerate() {
                // SAFETY: written above; each block is its own.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                assert!(
                    bytes.iter().all(|b| *b == i as u8),
                    "{size}/{align} overlapped"
                );
                // SAFETY: allocated above with `layout`.
                unsafe { ALLOCATOR.dealloc(p, layout) };
            }
        }
    }
}

#[test]
fn realloc_keeps_the_contents_and_the_alignment() {
    for align in ALIGNS {
        for (from, to) in [
            (24, 1025),
            (1025, 24),
            (100, 8192),
            (8192, 5 << 20),
            (40, 56),
        ] {
            let layout = Layout::from_size_align(from, align).expect("a valid layout");
            // SAFETY: non-zero size; the block is written before it is read, and freed with the
            // layout `realloc` gave it.
            unsafe {
                let p = ALLOCATOR.alloc(layout);
                for i in 0..from {
                    p.add(i).write(i as u8);
                }
                let q = ALLOCATOR.realloc(p, layout, to);
                assert!(
                    aligned(q, align),
                    "{from} → {to} bytes aligned to {align}: {q:p}"
                );
                for i in 0..from.min(to) {
                    assert_eq!(q.add(i).read(), i as u8, "{from} → {to}, byte {i}");
                }
                ALLOCATOR.dealloc(q, Layout::from_size_align_unchecked(to, align));
            }
        }
    }
}

#[test]
fn zeroed_blocks_are_zero_even_where_freed_blocks_were_dirty() {
    for align in [1, 8, 16, 64] {
        for size in SIZES {
            let layout = Layout::from_size_align(size, align).expect("a valid layout");
            // SAFETY: as above; freed dirty blocks of the same layout are what a zeroed
            // allocation would most likely reuse.
            unsafe {
                for _ in 0..4 {
                    let p = ALLOCATOR.alloc(layout);
                    p.write_bytes(0xAB, size);
                    ALLOCATOR.dealloc(p, layout);
                }
                let z = ALLOCATOR.alloc_zeroed(layout);
                assert!(aligned(z, align));
                assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                ALLOCATOR.dealloc(z, layout);
            }
        }
    }
}
