//! One multiplexed connection to Redis: calls from any number of tasks are queued to one driver
//! task, which writes every call queued since its last turn in one `write` and hands each call
//! its replies as they come back, in order (Redis answers a connection's commands in the order
//! they arrived).
//!
//! redis-rs's `MultiplexedConnection` works the same way; this one exists because it moves our
//! own RESP bytes (redis/wire.rs) instead of redis-rs's commands and values, which cost the
//! gateway more per request than the rate limiting they carried (docs/performance.md).
//!
//! Each call carries its deadline, and the driver keeps them: one timer per connection, armed
//! for the earliest call still waiting, instead of a timer per call registered and cancelled
//! by every caller. A call past its deadline is answered [`ConnError::Timeout`]; its replies,
//! if they come, are read and dropped, so the calls after it still get their own.
//!
//! A connection is opened plain (TCP with Nagle off, or a Unix socket) or, with the crate's
//! `tls` feature, in TLS; it sends `AUTH` and `SELECT` as the URL asks, and speaks RESP2.
//! Anything that breaks it (an I/O error, the server closing, bytes that are not RESP, a reply
//! nobody asked for) fails every call waiting on it and ends the driver; later calls fail at
//! once ([`Conn::is_closed`]) and the pool replaces it.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::wire::{self, Pipeline, Value};

/// Why a call got no replies. Each but `Timeout` means the connection is unusable (after a
/// timeout it still runs, but its caller has the pool drop it: it may be wedged).
#[derive(Debug, Clone)]
pub(super) enum ConnError {
    /// Reading or writing failed (the message is the I/O error's, which names no URL).
    Io(String),
    /// The server closed the connection, or it had already failed.
    Closed,
    /// The call's deadline passed before its replies came.
    Timeout,
    /// The server sent something that is not RESP.
    Protocol(wire::ProtocolError),
    /// The handshake was refused (`AUTH`, `SELECT`): the server's error code, e.g. `WRONGPASS`.
    Refused(String),
    /// TLS was asked for in a way this build cannot give.
    Tls(&'static str),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Closed => f.write_str("connection closed"),
            ConnError::Timeout => f.write_str("timeout"),
            ConnError::Protocol(e) => write!(f, "{e}"),
            ConnError::Refused(code) => write!(f, "redis error {code}"),
            ConnError::Tls(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e.to_string())
    }
}

/// What a call waits for: its replies, in the order its commands were sent.
type Answer = Result<Vec<Value>, ConnError>;

/// One call as the driver takes it.
struct Call {
    bytes: Vec<u8>,
    replies: usize,
    deadline: Instant,
    answer: oneshot::Sender<Answer>,
}

/// A handle to a connection; clones share it.
#[derive(Clone)]
pub(super) struct Conn {
    calls: mpsc::UnboundedSender<Call>,
}

impl Conn {
    /// Sends `bytes` (whole commands) and waits for the `replies` replies the server answers
    /// them with, until `deadline`. Dropping the future abandons the call; its replies are read
    /// and dropped.
    pub(super) async fn send(&self, bytes: &[u8], replies: usize, deadline: Instant) -> Answer {
        let (answer, receive) = oneshot::channel();
        self.calls
            .send(Call {
                // A copy, so that the caller keeps its bytes for a retry on another connection.
                bytes: bytes.to_vec(),
                replies,
                deadline,
                answer,
            })
            .map_err(|_| ConnError::Closed)?;
        receive.await.map_err(|_| ConnError::Closed)?
    }

    /// Whether the driver has ended: every later call would fail.
    pub(super) fn is_closed(&self) -> bool {
        self.calls.is_closed()
    }
}

/// Where a new connection's driver runs.
pub(super) type Spawn<'a> = &'a (dyn Fn(super::DriverTask) + Sync);

/// Opens a connection as `info` says, runs the handshake (by `deadline`) and hands the driver
/// to `spawn`.
pub(super) async fn connect(
    info: &ConnectionInfo,
    spawn: Spawn<'_>,
    deadline: Instant,
) -> Result<Conn, ConnError> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            // A call written while an earlier one is unacknowledged must not wait for its reply.
            stream.set_nodelay(true)?;
            start(info, stream, spawn, deadline).await
        }
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            start(info, stream, spawn, deadline).await
        }
        // `#insecure` was refused when the limiter was built (`RedisLimiter::connect_lazy`).
        #[cfg(feature = "tls")]
        ConnectionAddr::TcpTls { host, port, .. } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let stream = tls::wrap(host, stream).await?;
            start(info, stream, spawn, deadline).await
        }
        // Refused when the limiter was built, too.
        #[allow(unreachable_patterns)]
        _ => Err(ConnError::Tls(super::NO_TLS)),
    }
}

/// Starts the driver over `stream` and sends the handshake the URL asks for.
async fn start<S>(
    info: &ConnectionInfo,
    stream: S,
    spawn: Spawn<'_>,
    deadline: Instant,
) -> Result<Conn, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (calls, receive) = mpsc::unbounded_channel();
    spawn(Box::pin(Driver::new(stream, receive)));
    let conn = Conn { calls };
    let redis = info.redis_settings();
    let mut hello = Pipeline::with_capacity(64);
    if let Some(password) = redis.password() {
        hello.cmd("AUTH");
        if let Some(user) = redis.username() {
            hello.arg(user);
        }
        hello.arg(password);
    }
    if redis.db() != 0 {
        hello.cmd("SELECT").arg(redis.db());
    }
    if hello.is_empty() {
        return Ok(conn);
    }
    let replies = hello.finish();
    for reply in conn.send(hello.bytes(), replies, deadline).await? {
        if let Some(code) = reply.error_code() {
            return Err(ConnError::Refused(code.to_owned()));
        }
    }
    Ok(conn)
}

/// A call written, waiting for its replies.
struct Waiting {
    replies: usize,
    got: Vec<Value>,
    deadline: Instant,
    /// Taken when the call is answered early: its deadline passed.
    answer: Option<oneshot::Sender<Answer>>,
}

/// The task that owns the socket (see the module doc).
struct Driver<S> {
    stream: S,
    calls: mpsc::UnboundedReceiver<Call>,
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Bytes read, of which `input[parsed..filled]` are not yet a whole reply.
    input: Vec<u8>,
    parsed: usize,
    filled: usize,
    waiting: VecDeque<Waiting>,
    /// Fires at or before the earliest deadline of a call still waiting; `armed` says whether
    /// it is set for one at all.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

/// The read buffer's first size: a counters check's replies take about a hundred bytes.
const INPUT: usize = 16 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    fn new(stream: S, calls: mpsc::UnboundedReceiver<Call>) -> Self {
        Self {
            stream,
            calls,
            out: Vec::with_capacity(4096),
            written: 0,
            input: vec![0; INPUT],
            parsed: 0,
            filled: 0,
            waiting: VecDeque::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
        }
    }

    /// One turn: take every queued call, write what can be written, read what has come.
    /// `Ready(Ok)` when every handle is gone; `Ready(Err)` when the connection broke.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        loop {
            match self.calls.poll_recv(cx) {
                Poll::Ready(Some(call)) => {
                    self.out.extend_from_slice(&call.bytes);
                    if !self.armed || call.deadline < self.timer.deadline() {
                        self.timer.as_mut().reset(call.deadline);
                        self.armed = true;
                    }
                    self.waiting.push_back(Waiting {
                        replies: call.replies,
                        got: Vec::with_capacity(call.replies),
                        deadline: call.deadline,
                        answer: Some(call.answer),
                    });
                }
                // No handle left, so no caller is waiting for anything.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        while self.written < self.out.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ConnError::Closed)),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => break,
            }
        }
        if self.written == self.out.len() && !self.out.is_empty() {
            self.out.clear();
            self.written = 0;
            // A no-op on a socket; TLS may hold a record back until flushed.
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.stream).poll_flush(cx) {
                return Poll::Ready(Err(e.into()));
            }
        }
        self.expire(cx);
        // Read even with nothing waiting: the server closing an idle connection is noticed now,
        // not by the next call.
        loop {
            if self.filled == self.input.len() {
                self.make_room();
            }
            let mut buf = ReadBuf::new(&mut self.input[self.filled..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(ConnError::Closed));
                    }
                    self.filled += n;
                    self.deliver()?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Hands every whole reply read to the call it answers.
    fn deliver(&mut self) -> Result<(), ConnError> {
        while let Some((value, used)) =
            wire::parse(&self.input[self.parsed..self.filled]).map_err(ConnError::Protocol)?
        {
            self.parsed += used;
            let Some(call) = self.waiting.front_mut() else {
                return Err(ConnError::Protocol(wire::ProtocolError::UNASKED));
            };
            call.got.push(value);
            if call.got.len() == call.replies
                && let Some(done) = self.waiting.pop_front()
                && let Some(answer) = done.answer
            {
                // The caller may have given up; its replies are dropped.
                let _ = answer.send(Ok(done.got));
            }
        }
        if self.parsed == self.filled {
            self.parsed = 0;
            self.filled = 0;
            // A large reply (another program's value read by `GET`) does not keep its buffer.
            if self.input.len() > 4 * INPUT {
                self.input.truncate(INPUT);
                self.input.shrink_to_fit();
            }
        }
        Ok(())
    }

    /// Answers every call whose deadline has passed, and arms the timer for the next one.
    /// Deadlines mostly come in order, so the timer is moved once per deadline that fires, not
    /// once per call.
    fn expire(&mut self, cx: &mut Context<'_>) {
        while self.armed && self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let mut next = None;
            for call in &mut self.waiting {
                if call.deadline <= now {
                    if let Some(answer) = call.answer.take() {
                        let _ = answer.send(Err(ConnError::Timeout));
                    }
                } else if call.answer.is_some() {
                    next = Some(call.deadline);
                    break;
                }
            }
            match next {
                Some(deadline) => self.timer.as_mut().reset(deadline),
                None => self.armed = false,
            }
        }
    }

    /// Room to read into: the unparsed part moved to the front, or the buffer doubled when a
    /// reply is larger than it.
    fn make_room(&mut self) {
        if self.parsed > 0 {
            self.input.copy_within(self.parsed..self.filled, 0);
            self.filled -= self.parsed;
            self.parsed = 0;
        } else {
            let len = self.input.len();
            self.input.resize(len * 2, 0);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.turn(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(e)) => {
                // Later calls find the channel closed.
                this.calls.close();
                for answer in this.waiting.drain(..).filter_map(|call| call.answer) {
                    let _ = answer.send(Err(e.clone()));
                }
                while let Ok(call) = this.calls.try_recv() {
                    let _ = call.answer.send(Err(e.clone()));
                }
                Poll::Ready(())
            }
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! `rediss://`: rustls with the platform's root certificates, as redis-rs's own TLS does.

    use std::sync::{Arc, OnceLock};

    use super::ConnError;

    fn config() -> Result<Arc<rustls::ClientConfig>, ConnError> {
        static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .ok()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            })
            .clone()
            .ok_or(ConnError::Tls("cannot build a TLS client configuration"))
    }

    pub(super) async fn wrap(
        host: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ConnError> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| ConnError::Tls("the Redis host is not a valid TLS server name"))?;
        let connector = tokio_rustls::TlsConnector::from(config()?);
        Ok(connector.connect(name, stream).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spawn_here(driver: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(driver);
    }

    /// A deadline no test reaches.
    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    /// A connection whose driver runs over one end of an in-memory pipe of `buffer` bytes; the
    /// test plays the server on the other end.
    fn piped(buffer: usize) -> (Conn, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(buffer);
        let (calls, receive) = mpsc::unbounded_channel();
        spawn_here(Box::pin(Driver::new(client, receive)));
        (Conn { calls }, server)
    }

    /// `bytes` sent through `conn` by a task of its own, as concurrent callers send.
    fn call(
        conn: &Conn,
        bytes: &'static [u8],
        replies: usize,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<Answer> {
        let conn = conn.clone();
        tokio::spawn(async move { conn.send(bytes, replies, deadline).await })
    }

    /// A fake server on a socket pair: what it reads, and replies written by hand, so framing
    /// (replies split anywhere, several calls' replies in one segment) is what the test says.
    #[tokio::test]
    async fn replies_split_and_batched_reach_their_calls_in_order() {
        let (conn, mut server) = piped(64);
        let first = call(&conn, b"*1\r\n$4\r\nPING\r\n", 1, later());
        let mut seen = [0u8; 14];
        server.read_exact(&mut seen).await.unwrap();
        let second = call(&conn, b"*1\r\n$4\r\nTIME\r\n", 2, later());
        server.read_exact(&mut seen).await.unwrap();
        for piece in [&b"+PO"[..], b"NG\r\n:1\r", b"\n$3\r\nabc\r\n"] {
            server.write_all(piece).await.unwrap();
            server.flush().await.unwrap();
        }
        assert_eq!(
            first.await.unwrap().unwrap(),
            vec![Value::Status("PONG".into())]
        );
        assert_eq!(
            second.await.unwrap().unwrap(),
            vec![Value::Int(1), Value::Bulk(b"abc".to_vec())]
        );
    }

    #[tokio::test]
    async fn garbage_or_a_close_fails_the_calls_and_the_connection() {
        let (conn, mut server) = piped(64);
        let pending = call(&conn, b"*1\r\n$4\r\nPING\r\n", 1, later());
        let mut seen = [0u8; 14];
        server.read_exact(&mut seen).await.unwrap();
        server.write_all(b"%3\r\n").await.unwrap();
        assert!(matches!(
            pending.await.unwrap(),
            Err(ConnError::Protocol(_))
        ));
        assert!(matches!(
            conn.send(b"*1\r\n$4\r\nPING\r\n", 1, later()).await,
            Err(ConnError::Closed)
        ));
        assert!(conn.is_closed());

        // A reply nobody asked for, and the server hanging up on an idle connection.
        for hang_up in [false, true] {
            let (conn, mut server) = piped(64);
            if hang_up {
                drop(server);
            } else {
                server.write_all(b"+OK\r\n").await.unwrap();
            }
            // The driver notices on its own, before any call.
            let closed = async {
                while !conn.is_closed() {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), closed)
                .await
                .unwrap();
            let result = conn.send(b"*1\r\n$4\r\nPING\r\n", 1, later()).await;
            assert!(matches!(result, Err(ConnError::Closed)), "{result:?}");
        }
    }

    #[tokio::test]
    async fn a_reply_larger_than_the_buffer_is_read_whole() {
        let (conn, mut server) = piped(4096);
        let pending = call(&conn, b"*1\r\n$3\r\nGET\r\n", 1, later());
        let mut seen = [0u8; 13];
        server.read_exact(&mut seen).await.unwrap();
        let big = vec![b'x'; 5 * INPUT + 5];
        server
            .write_all(format!("${}\r\n", big.len()).as_bytes())
            .await
            .unwrap();
        server.write_all(&big).await.unwrap();
        server.write_all(b"\r\n").await.unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), vec![Value::Bulk(big)]);
        // The buffer, grown for it and then given back, still serves the next call.
        let next = call(&conn, b"*1\r\n$3\r\nGET\r\n", 1, later());
        server.read_exact(&mut seen).await.unwrap();
        server.write_all(b":5\r\n").await.unwrap();
        assert_eq!(next.await.unwrap().unwrap(), vec![Value::Int(5)]);
    }

    /// A stream that takes a few bytes a write and then is not writable until a timer wakes
    /// its writer, counting the writes tried after it said `Pending` and before that waker
    /// fired (a driver must wait for it). Past a hundred it panics: a driver spinning on it
    /// never yields, so on one thread the timer would never fire.
    struct Stingy {
        inner: tokio::io::DuplexStream,
        /// Not writable until the timer clears it.
        blocked: Arc<std::sync::atomic::AtomicBool>,
        /// It said `Pending` and set the timer.
        waiting: bool,
        spurious: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            use std::sync::atomic::Ordering::SeqCst;
            if !self.blocked.load(SeqCst) {
                self.waiting = false;
                self.blocked.store(true, SeqCst);
                let n = buf.len().min(4);
                return Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
            }
            if self.waiting {
                assert!(
                    self.spurious.fetch_add(1, SeqCst) < 100,
                    "spinning on a full socket"
                );
            } else {
                self.waiting = true;
                let (blocked, waker) = (Arc::clone(&self.blocked), cx.waker().clone());
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    blocked.store(false, SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl AsyncRead for Stingy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    /// A batch the socket cannot take at once is written as it becomes writable, the driver
    /// waiting for its waker in between instead of trying again at once.
    #[tokio::test(start_paused = true)]
    async fn a_batch_the_socket_cannot_take_at_once_waits_for_it_to_drain() {
        let (client, mut server) = tokio::io::duplex(1024);
        let spurious = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stream = Stingy {
            inner: client,
            blocked: Arc::default(),
            waiting: false,
            spurious: Arc::clone(&spurious),
        };
        let (calls, receive) = mpsc::unbounded_channel();
        spawn_here(Box::pin(Driver::new(stream, receive)));
        let conn = Conn { calls };
        let both = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nTIME\r\n";
        let pending = call(&conn, both, 2, later());
        let mut seen = [0u8; 28];
        server.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen, both);
        server.write_all(b"+PONG\r\n:2\r\n").await.unwrap();
        assert_eq!(
            pending.await.unwrap().unwrap(),
            vec![Value::Status("PONG".into()), Value::Int(2)]
        );
        assert_eq!(spurious.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// A call past its deadline is answered `Timeout` at its deadline (the clock is paused and
    /// moves only when every task waits); the call behind it still gets its own replies when
    /// they come, the late ones of the first read and dropped.
    #[tokio::test(start_paused = true)]
    async fn a_late_call_times_out_alone_and_its_replies_are_skipped() {
        let (conn, mut server) = piped(64);
        let start = Instant::now();
        let soon = start + std::time::Duration::from_millis(50);
        let first = call(&conn, b"*1\r\n$4\r\nPING\r\n", 1, soon);
        let second = call(&conn, b"*1\r\n$4\r\nTIME\r\n", 1, later());
        let mut seen = [0u8; 28];
        server.read_exact(&mut seen).await.unwrap();
        assert!(matches!(first.await.unwrap(), Err(ConnError::Timeout)));
        assert_eq!(Instant::now(), soon);
        server.write_all(b"+PONG\r\n:7\r\n").await.unwrap();
        assert_eq!(second.await.unwrap().unwrap(), vec![Value::Int(7)]);
        assert!(!conn.is_closed());
    }
}
