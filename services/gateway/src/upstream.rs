//! The connections to the model server: HTTP/1.1 over TCP, pooled per worker.
//!
//! Written on hyper's connection-level client (`hyper::client::conn::http1`) with a small pool of
//! our own, rather than awc or hyper-util's pooled client. awc builds a fresh codec for every
//! request, and with it a date-refreshing task and its timer: a task spawned and aborted, a timer
//! registered and an `eventfd` write per proxied request (docs/performance.md). hyper-util's
//! client needs `Send` request bodies, and a streamed upload read from actix is not. The pool is
//! the worker's own (built with the worker's `App`, like everything `!Send` in it), and each
//! connection's task runs in the worker's `LocalSet` with the requests it serves.
//!
//! A connection goes back to the pool only once its response body has been read to the end
//! ([`response_body`]); a response abandoned half way (the client hung up, a stream cut at its
//! token budget) closes it, so the upstream sees the abort. A pooled connection the upstream
//! closed while it sat idle is noticed before a request is written to it (hyper hands an unsent
//! request back), and the request goes out on a fresh connection instead of failing.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1;
use tokio::sync::Semaphore;

/// What the proxy sends as a request body.
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>),
}

/// Why a streamed request body stopped; the proxy reports the reason it recorded itself.
#[derive(Debug)]
struct BodyFailed(String);

impl std::fmt::Display for BodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyFailed {}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => match s.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => {
                    Poll::Ready(Some(Err(Box::new(BodyFailed(e.to_string())))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// An actix (`http` 0.2) header as hyper's `http` 1.x types; `None` never happens for a header
/// actix parsed or the configuration validated, as both crates accept the same bytes.
pub fn header_pair(
    name: &actix_web::http::header::HeaderName,
    value: &actix_web::http::header::HeaderValue,
) -> Option<(http::HeaderName, http::HeaderValue)> {
    Some((
        http::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
        http::HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ))
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    #[error("upstream connection failed: {0}")]
    Protocol(hyper::Error),
}

impl SendError {
    /// The `kind` label of `upstream_errors` and the span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::ConnectTimeout => "timeout",
            SendError::Connect(_) => "connect",
            SendError::Protocol(_) => "protocol",
        }
    }
}

/// Settings of a [`Pool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// `host:port`, resolved at each connect (a DNS name may move).
    pub authority: String,
    /// The `Host` every request names: the upstream URL's authority.
    pub host: http::HeaderValue,
    /// The upstream URL's path (`""` or `/base`), put before every request's path.
    pub base_path: String,
    /// The credential the gateway adds to every upstream request, when configured.
    pub credential: Option<(http::HeaderName, http::HeaderValue)>,
    pub connect_timeout: Duration,
    /// Most requests in flight, so most connections open, per worker.
    pub max_connections: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// A connection is not reused past this age.
    pub lifetime: Duration,
}

/// Most a connection's read buffer grows to (see [`Pool::connect`]).
const READ_BUFFER_MAX: usize = 64 * 1024;

struct Idle {
    sender: http1::SendRequest<Body>,
    born: Instant,
    since: Instant,
}

struct Inner {
    cfg: PoolConfig,
    idle: RefCell<Vec<Idle>>,
    /// One permit per request in flight: a connection is made only when none is idle, so open
    /// connections never outnumber the permits.
    permits: Arc<Semaphore>,
}

/// One worker's connections to the upstream. Cloning shares them.
#[derive(Clone)]
pub struct Pool {
    inner: Rc<Inner>,
}

/// A connection serving one request, and the permit that let it. Back to the pool through
/// [`Lease::release`] once the response body ended; dropped otherwise, which closes it.
pub struct Lease {
    sender: Option<http1::SendRequest<Body>>,
    born: Instant,
    pool: Pool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Lease {
    /// The response was read to its end: the connection may serve the next request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            let now = Instant::now();
            if now.duration_since(self.born) < self.pool.inner.cfg.lifetime {
                self.pool.inner.idle.borrow_mut().push(Idle {
                    sender,
                    born: self.born,
                    since: now,
                });
            }
        }
    }
}

/// A response body as the client is sent it, chunk by chunk as the upstream sends it: each chunk
/// must arrive within `idle` (a stalled upstream ends the stream instead of holding the client
/// forever), and the connection goes back to the pool once the body was read to the end.
/// Failures are counted in `errors` by kind and logged with the request's id.
pub fn response_body(
    incoming: hyper::body::Incoming,
    lease: Lease,
    idle: Duration,
    request_id: Arc<str>,
    errors: prometheus::IntCounterVec,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    /// What the stream holds between chunks (moved from one to the next, not cloned).
    struct Reading {
        body: hyper::body::Incoming,
        lease: Lease,
        request_id: Arc<str>,
        errors: prometheus::IntCounterVec,
    }
    // A response with no body (HEAD, 204, 304) frees its connection now: actix may never poll
    // the stream of such a response, and a lease dropped unread closes the connection.
    let reading = if incoming.is_end_stream() {
        lease.release();
        None
    } else {
        Some(Reading {
            body: incoming,
            lease,
            request_id,
            errors,
        })
    };
    futures_util::stream::unfold(reading, move |reading| async move {
        let Reading {
            mut body,
            lease,
            request_id,
            errors,
        } = reading?;
        let next = async {
            loop {
                match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    // Trailers are not passed on (nor were they before).
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(chunk) => return Some(Ok(chunk)),
                        Err(_) => continue,
                    },
                    Some(Err(e)) => return Some(Err(e)),
                    None => return None,
                }
            }
        };
        match tokio::time::timeout(idle, next).await {
            // The last bytes of a sized body: free the connection now, as actix need not poll
            // a stream whose length it was told past its last chunk.
            Ok(Some(Ok(chunk))) if body.is_end_stream() => {
                lease.release();
                Some((Ok::<Bytes, actix_web::Error>(chunk), None))
            }
            Ok(Some(Ok(chunk))) => {
                let rest = Reading {
                    body,
                    lease,
                    request_id,
                    errors,
                };
                Some((Ok(chunk), Some(rest)))
            }
            Ok(Some(Err(e))) => {
                errors.with_label_values(&["body"]).inc();
                tracing::warn!(request_id = %request_id, error = %e, "upstream body failed");
                Some((Err(actix_web::error::ErrorBadGateway(e)), None))
            }
            Ok(None) => {
                // Read to the end: the connection serves the next request.
                lease.release();
                None
            }
            Err(_) => {
                errors.with_label_values(&["idle_timeout"]).inc();
                tracing::warn!(request_id = %request_id, "upstream stream idle timeout");
                Some((
                    Err(actix_web::error::ErrorGatewayTimeout("upstream idle")),
                    None,
                ))
            }
        }
    })
}

impl PoolConfig {
    /// From the validated upstream URL (`http://host[:port][/base]`, config::parse::upstream_url).
    pub fn from_url(
        url: &str,
        connect_timeout: Duration,
        max_connections: usize,
    ) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// URL: {url}"))?;
        let (host, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        // A port, unless the host ends in one (an IPv6 literal ends in `]`).
        let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty()
        });
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(PoolConfig {
            authority,
            host: http::HeaderValue::from_str(host).map_err(|e| format!("upstream host: {e}"))?,
            base_path: base.trim_end_matches('/').to_string(),
            credential: None,
            connect_timeout,
            max_connections,
            idle_timeout: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
        })
    }
}

impl Pool {
    /// The `Host` every request names.
    pub fn host(&self) -> &http::HeaderValue {
        &self.inner.cfg.host
    }

    /// The path put before every request's path.
    pub fn base_path(&self) -> &str {
        &self.inner.cfg.base_path
    }

    /// The credential added to every request.
    pub fn credential(&self) -> Option<&(http::HeaderName, http::HeaderValue)> {
        self.inner.cfg.credential.as_ref()
    }

    /// `GET <base><path>` with nothing but `Host` (the health probe): its status, the body read
    /// to the end (at most 64 KiB, else the connection is closed) so the connection is reused.
    pub async fn get_status(&self, path: &str) -> Result<u16, SendError> {
        let mut req = http::Request::new(Body::Empty);
        let uri = format!("{}{path}", self.base_path());
        *req.uri_mut() = http::Uri::try_from(uri)
            .map_err(|e| SendError::Connect(std::io::Error::other(e.to_string())))?;
        req.headers_mut()
            .insert(http::header::HOST, self.host().clone());
        let (res, lease) = self.send(req).await?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut read = 0usize;
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > 64 * 1024 {
                        return Ok(status);
                    }
                }
                Some(Err(_)) => return Ok(status),
                None => break,
            }
        }
        lease.release();
        Ok(status)
    }

    pub fn new(cfg: PoolConfig) -> Self {
        let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        Pool {
            inner: Rc::new(Inner {
                cfg,
                idle: RefCell::new(Vec::new()),
                permits,
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the response head. The caller
    /// bounds the whole call with the upstream timeout.
    pub async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<(http::Response<hyper::body::Incoming>, Lease), SendError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| SendError::Connect(std::io::Error::other("upstream pool closed")))?;
        loop {
            let (mut sender, born, reused) = match self.take_idle() {
                Some(idle) => (idle.sender, idle.born, true),
                // Boxed: connecting is rare under load and its future is most of this one's.
                None => (Box::pin(self.connect()).await?, Instant::now(), false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(std::io::Error::other(
                    "the upstream closed the new connection",
                )));
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        sender: Some(sender),
                        born,
                        pool: self.clone(),
                        _permit: permit,
                    };
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the pooled connection had closed. A fresh one gets it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Protocol(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and young enough.
    fn take_idle(&self) -> Option<Idle> {
        let cfg = &self.inner.cfg;
        let mut idle = self.inner.idle.borrow_mut();
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed()
                && now.duration_since(c.since) < cfg.idle_timeout
                && now.duration_since(c.born) < cfg.lifetime
            {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, SendError> {
        let cfg = &self.inner.cfg;
        let stream = tokio::time::timeout(
            cfg.connect_timeout,
            tokio::net::TcpStream::connect(cfg.authority.as_str()),
        )
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
        // Requests and responses are small and latency-bound.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            // hyper's read buffer grows to ~400 KiB on a fast stream; the chunks it hands on are
            // slices of it, so a few streams would hold megabytes. 64 KiB still reads a large
            // response in few syscalls and bounds a response head at a size no model server nears.
            .max_buf_size(READ_BUFFER_MAX)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(SendError::Protocol)?;
        // In the worker's LocalSet, with the requests it serves; it ends when the connection
        // closes or its last sender is dropped.
        actix_rt::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
