//! The log writer: each logging thread appends its lines to a buffer of its own, and a thread of
//! its own writes the buffers out every [`FLUSH_EVERY`], or as soon as one holds [`FLUSH_AT`]
//! bytes.
//!
//! Written here rather than taken from tracing-appender because of what a gateway's access log
//! needs: tracing-appender queues each line as its own allocation on a channel and its worker
//! drains and flushes the queue whenever it runs dry, so under load it is woken (and scheduled
//! against the request workers, often on their core) for nearly every line. Here a line costs a
//! lock of the thread's own buffer (contended only by the writer, about ten times a second) and a
//! copy: no allocation, no wake-up, and no lock or cache line shared by all workers (issue 11).
//! The writer writes tens of kilobytes at once, as nginx's `access_log ... buffer=64k flush=1s`
//! does, and like nginx's workers, each thread's lines stay in their order and whole, while two
//! threads' lines are interleaved a buffer at a time (the buffer whose first line is oldest
//! first; at shutdown the closing thread's last, so the process's last line is the log's).
//!
//! No line is dropped: past [`MAX_BUFFERED`] bytes in its buffer (the disk cannot keep up) a
//! logging thread waits for the writer instead. [`WriterGuard`] writes out everything buffered
//! when dropped (on clean shutdown), before the process exits; a line logged after that is
//! written straight through.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use thread_local::ThreadLocal;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in a buffer on a quiet server.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes in one thread's buffer that wake the writer at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// Bytes in one thread's buffer past which it waits for the writer (no line is dropped).
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// A panic while holding one of these locks leaves at worst a partial line; logging goes on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One logging thread's buffer.
#[derive(Default)]
struct Buffer {
    lines: Mutex<Lines>,
    /// Signalled after the writer takes this buffer's lines, for a thread waiting on
    /// [`MAX_BUFFERED`].
    drained: Condvar,
}

#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// When `buf`'s first line came, in [`Shared::order`]: the writer takes the buffers oldest
    /// first, so the output stays close to the order lines were logged in.
    since: u64,
    /// Set by the writer's last pass (or at once, for a buffer made after it): lines go straight
    /// through from then on.
    closed: bool,
}

/// What the writer thread takes lines from.
#[derive(Default)]
struct Registry {
    /// Every thread's buffer, in the order the threads first logged. A thread registers once;
    /// the writer copies the list on each pass. Bounded by the most threads alive at once:
    /// `ThreadLocal` keeps a value when its thread exits and gives it to the next thread that
    /// takes the same id.
    buffers: Vec<Arc<Buffer>>,
    /// Set when the guard is dropped: a buffer registered after it is closed from the start.
    closed: bool,
    /// A buffer crossed [`FLUSH_AT`]: write out now, not at the next tick.
    wake: bool,
    /// The buffer of the thread that dropped the guard: written last in the last pass, so the
    /// process's last line (the server's "stopped") is the log's last.
    closer: Option<Arc<Buffer>>,
}

struct Shared {
    registry: Mutex<Registry>,
    /// Signalled on `wake` and on close.
    wake: Condvar,
    /// This thread's buffer, looked up without a lock.
    mine: ThreadLocal<Arc<Buffer>>,
    /// Counts buffers' first lines ([`Lines::since`]): taken once a buffer a write-out, not once
    /// a line.
    order: AtomicU64,
}

impl Shared {
    fn buffer(&self) -> &Buffer {
        self.mine.get_or(|| {
            let buffer = Arc::new(Buffer::default());
            let mut registry = lock(&self.registry);
            if registry.closed {
                // Never seen by the writer's last pass: write straight through.
                lock(&buffer.lines).closed = true;
            } else {
                registry.buffers.push(buffer.clone());
            }
            buffer
        })
    }

    fn wake_writer(&self) {
        lock(&self.registry).wake = true;
        self.wake.notify_one();
    }
}

/// The `MakeWriter` handed to the fmt layer; cheap to clone.
#[derive(Clone)]
pub struct BufferedWriter {
    shared: Arc<Shared>,
}

/// Ends the writer thread after writing out what is buffered; dropping it does the same.
#[must_use = "dropping the guard stops the log writer"]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`. Without a thread (the OS refused one) lines are written
/// straight to stderr by the logging thread.
pub fn buffered<W: Write + Send + 'static>(out: W) -> (BufferedWriter, WriterGuard) {
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::default()),
        wake: Condvar::new(),
        mine: ThreadLocal::new(),
        order: AtomicU64::new(0),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("infergate-log".into())
            .spawn(move || run(&shared, out))
    };
    let thread = match thread {
        Ok(t) => Some(t),
        Err(_) => {
            // No writer: buffers are closed as they are made, so lines go straight through.
            lock(&shared.registry).closed = true;
            None
        }
    };
    (
        BufferedWriter {
            shared: shared.clone(),
        },
        WriterGuard { shared, thread },
    )
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        let (buffers, closed) = {
            let mut registry = lock(&shared.registry);
            if !registry.wake && !registry.closed {
                registry = shared
                    .wake
                    .wait_timeout(registry, FLUSH_EVERY)
                    .map(|(r, _)| r)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            registry.wake = false;
            // Once closed, no buffer is added: this pass is the last, and sees them all.
            let mut buffers: Vec<(bool, u64, Arc<Buffer>)> = registry
                .buffers
                .iter()
                .map(|b| {
                    let lines = lock(&b.lines);
                    let since = if lines.buf.is_empty() {
                        u64::MAX
                    } else {
                        lines.since
                    };
                    let closer = registry.closer.as_ref().is_some_and(|c| Arc::ptr_eq(c, b));
                    (closer, since, b.clone())
                })
                .collect();
            buffers.sort_unstable_by_key(|&(closer, since, _)| (closer, since));
            (buffers, registry.closed)
        };
        for (_, _, buffer) in &buffers {
            {
                let mut lines = lock(&buffer.lines);
                std::mem::swap(&mut lines.buf, &mut spare);
                // Under the same lock as the take: a line after this goes straight through, one
                // before it is in `spare`.
                lines.closed |= closed;
            }
            buffer.drained.notify_all();
            if !spare.is_empty() {
                // Nowhere to report a failed log write; the next write-out tries again.
                let _ = out.write_all(&spare);
                spare.clear();
            }
        }
        let _ = out.flush();
        if closed {
            return;
        }
    }
}

/// What the fmt layer writes one event's line through: the writer borrowed, so making it per
/// event touches no reference count (an `Arc` clone would be a cache line every worker shares).
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let buffer = self.shared.buffer();
        let mut lines = lock(&buffer.lines);
        while lines.buf.len() >= MAX_BUFFERED && !lines.closed {
            lines = buffer
                .drained
                .wait(lines)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if lines.closed {
            // After shutdown (or with no writer thread): straight through.
            drop(lines);
            return std::io::stderr().write(line);
        }
        let before = lines.buf.len();
        if before == 0 {
            lines.since = self.shared.order.fetch_add(1, Ordering::Relaxed);
        }
        lines.buf.extend_from_slice(line);
        let crossed = before < FLUSH_AT && lines.buf.len() >= FLUSH_AT;
        drop(lines);
        // Only the line that crosses the mark wakes the writer: a wake-up is a lock and a futex
        // syscall, and lines keep arriving until the writer takes the buffer.
        if crossed {
            self.shared.wake_writer();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let mut registry = lock(&self.shared.registry);
        registry.closed = true;
        registry.closer = self.shared.mine.get().cloned();
        drop(registry);
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = buffered(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let mut w = writer.make_writer();
                        w.write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 80_000);
        for t in 0..4 {
            // Each thread's lines in its own order, none torn.
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 20_000);
            assert_eq!(mine[19_999], format!("thread {t} line 19999"));
        }
    }

    /// Each thread appends to its own buffer: a thread in the middle of a line (its buffer
    /// locked, here by the test) holds up no other thread's logging.
    #[test]
    fn a_thread_appends_without_waiting_for_another_threads_buffer() {
        let sink = Sink::default();
        let (writer, guard) = buffered(sink.clone());
        writer.make_writer().write_all(b"first\n").unwrap();
        let held = lock(&writer.shared.buffer().lines);
        let (appended_tx, appended) = std::sync::mpsc::channel();
        let other = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.make_writer().write_all(b"second\n").unwrap();
                appended_tx.send(()).unwrap();
            })
        };
        let waited = appended.recv_timeout(Duration::from_secs(30)).is_err();
        drop(held);
        other.join().unwrap();
        assert!(!waited, "a line waited for another thread's buffer");
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    /// Buffers are written oldest first, so lines of two threads come out in the order they
    /// were logged when each buffer holds one; and the thread that drops the guard is written
    /// last, so the process's last line is the log's last.
    #[test]
    fn buffers_are_written_oldest_first_and_the_closing_threads_last() {
        let sink = Sink::default();
        let (writer, guard) = buffered(sink.clone());
        let log = |text: &'static str| {
            let writer = writer.clone();
            move || writer.make_writer().write_all(text.as_bytes()).unwrap()
        };
        log("main: early\n")();
        // `second` registers its buffer first (and its line is written out), so in the list of
        // buffers it comes before `first`.
        let (go_tx, go) = std::sync::mpsc::channel::<()>();
        let second = std::thread::spawn({
            let (c0, c) = (log("second: 0\n"), log("second: 2\n"));
            move || {
                c0();
                go.recv().unwrap();
                c();
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&sink.0.lock().unwrap()).contains("second: 0") {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Pending in this thread's buffer, older than the next two threads' lines.
        log("main: pending\n")();
        std::thread::spawn(log("first: 1\n")).join().unwrap();
        go_tx.send(()).unwrap();
        second.join().unwrap();
        log("main: stopped\n")();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let at = |l: &str| {
            text.find(l)
                .unwrap_or_else(|| panic!("{l} missing from {text}"))
        };
        assert!(at("first: 1") < at("second: 2"), "{text}");
        assert_eq!(text.lines().last(), Some("main: stopped"), "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    #[test]
    fn a_quiet_line_is_written_within_the_flush_interval() {
        let sink = Sink::default();
        let (writer, _guard) = buffered(sink.clone());
        writer.make_writer().write_all(b"alone\n").unwrap();
        // Not waiting for the guard: the timer writes it out. Generous for a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"alone\n");
    }
}
