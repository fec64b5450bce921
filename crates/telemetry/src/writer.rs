//! The log writer: log lines are appended to one shared in-memory buffer, and a thread of its
//! own writes the buffer out every [`FLUSH_EVERY`], or as soon as it holds [`FLUSH_AT`] bytes.
//!
//! Written here rather than taken from tracing-appender because of what a gateway's access log
//! needs: tracing-appender queues each line as its own allocation on a channel and its worker
//! drains and flushes the queue whenever it runs dry, so under load it is woken (and scheduled
//! against the request workers, often on their core) for nearly every line. Here a line costs a
//! short lock and a copy, no allocation and no wake-up; the thread wakes about ten times a second
//! and writes tens of kilobytes at once, as nginx's `access_log ... buffer=64k flush=1s` does.
//!
//! No line is dropped: past [`MAX_BUFFERED`] bytes (the disk cannot keep up) a logging thread
//! waits for the writer instead. [`WriterGuard`] writes out everything buffered when dropped
//! (on clean shutdown), before the process exits.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer on a quiet server.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that wake the writer at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// Buffered bytes past which a logging thread waits for the writer (no line is dropped).
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer reaches [`FLUSH_AT`] or the writer is closed.
    full: Condvar,
    /// Signalled after each write-out, for threads waiting on [`MAX_BUFFERED`].
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while appending leaves at worst a partial line; logging goes on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        state: Mutex::new(State {
            buf: Vec::with_capacity(FLUSH_AT * 2),
            closed: false,
        }),
        full: Condvar::new(),
        drained: Condvar::new(),
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
            // No writer: mark closed so appenders write through themselves.
            shared.lock().closed = true;
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
        let mut state = shared.lock();
        if state.buf.len() < FLUSH_AT && !state.closed {
            state = shared
                .full
                .wait_timeout(state, FLUSH_EVERY)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::swap(&mut state.buf, &mut spare);
        let closed = state.closed;
        drop(state);
        if !spare.is_empty() {
            // Nowhere to report a failed log write; the next write-out tries again.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        shared.drained.notify_all();
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Write for BufferedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buf.len() >= MAX_BUFFERED && !state.closed {
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            // After shutdown (or with no writer thread): straight through.
            drop(state);
            return std::io::stderr().write(line);
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(line);
        // Only the line that crosses the mark wakes the writer: a notify is a futex syscall
        // even with nobody waiting, and lines keep arriving until the writer takes the buffer.
        if before < FLUSH_AT && state.buf.len() >= FLUSH_AT {
            self.shared.full.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = BufferedWriter;
    fn make_writer(&'a self) -> BufferedWriter {
        self.clone()
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.full.notify_one();
        self.shared.drained.notify_all();
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
