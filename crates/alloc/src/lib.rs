//! The gateway's global allocator: mimalloc, entered the way its fast paths expect.
//!
//! Every Rust allocation comes with an alignment, and the `mimalloc` crate's `MiMalloc` hands all
//! of them to `mi_malloc_aligned`. In mimalloc 3 that entry's fast path only serves a block up to
//! 1 KiB whose free-list head happens to be aligned; anything larger (the connections' I/O
//! buffers among them) takes the generic path and there an over-allocation of `size + align - 1`: ~10 of the gateway's ~50 allocations a request, ~300
//! instructions each, and a block one size class larger than asked for (docs/performance.md).
//! Every mimalloc block is at least word-aligned (its size classes are whole words from a
//! 16-byte-aligned page start), so a layout whose alignment is a word or less is served by
//! `mi_malloc`, `mi_zalloc` and `mi_realloc`, as Rust's own `System` allocator serves such
//! layouts by `malloc`. Larger alignments keep the aligned entries. `mi_free` frees both.
//!
//! Written by hand because no maintained crate enters mimalloc this way; it is the one crate of
//! the workspace allowed `unsafe` outside tests, and only for the four `GlobalAlloc` calls.

#![no_std]
// `GlobalAlloc` is an unsafe trait; each method below only forwards to mimalloc.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has whatever its size.
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator] static A: Mimalloc = Mimalloc;`).
pub struct Mimalloc;

// SAFETY: each method forwards to the mimalloc function with the same contract: `mi_malloc`,
// `mi_zalloc` and `mi_realloc` return blocks aligned to at least `WORD`, so they are used only for
// layouts aligned to `WORD` or less; other layouts go to the `_aligned` functions with their
// alignment. mimalloc returns null on failure, as `GlobalAlloc` requires, and `mi_free` frees a
// block from either family.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl; `layout.size()` is non-zero, as `GlobalAlloc::alloc` requires.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`, whose alignment the new block
        // keeps.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}
