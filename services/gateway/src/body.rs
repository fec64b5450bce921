//! Request bodies: read within a deadline and a size limit, decoded, or streamed.
//!
//! - **Deadline.** A body of `n` bytes may take `timeout + n / min_bytes_per_second` to arrive
//!   (checked as each chunk arrives, so a stall is caught even when the client declared a large
//!   length). Past it: `408 request_timeout`, and the connection is closed. A client that sends
//!   headers and then nothing no longer holds a connection open indefinitely.
//! - **Limit.** On the bytes received, and, for a `Content-Encoding`d body, on the *decoded* bytes:
//!   a zip bomb stops at the limit, not in memory.
//! - **Encoding.** `gzip`, `deflate` (zlib or raw) and `br` are decoded (flate2, brotli), at most
//!   [`MAX_ENCODINGS`] layers; the gateway validates and forwards the decoded body, without the
//!   `Content-Encoding` header, so the upstream runs exactly what was checked. Anything else →
//!   `415` naming the accepted ones.
//! - **Uploads** (multipart forms, files; [`infergate_config::BodyLimits::upload`]) are streamed to
//!   the upstream, never buffered whole. For a key with a model allowlist the multipart stream is
//!   parsed as it passes (multer) and its `model` field checked; the last chunk is held back until
//!   the whole form was seen, so the upstream never receives a complete request the gateway would
//!   refuse, and a refused model aborts the upload at once.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;

use actix_web::dev::Payload;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use infergate_config::BodyLimits;
use tokio::time::Instant;

use crate::error::GatewayError;

/// The most `Content-Encoding` layers decoded; more is refused (each layer costs a full pass).
pub const MAX_ENCODINGS: usize = 2;

/// How fast a body must arrive (from [`BodyLimits`]; `Copy`, so a stream carries it for free).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    timeout: Duration,
    min_bytes_per_second: u64,
}

impl Pace {
    pub fn of(limits: &BodyLimits) -> Self {
        Self {
            timeout: limits.timeout,
            min_bytes_per_second: limits.min_bytes_per_second,
        }
    }

    /// When the next chunk must have arrived, given what has arrived since `start`.
    fn deadline(self, start: Instant, received: usize) -> Instant {
        start
            + self.timeout
            + Duration::from_secs(received as u64 / self.min_bytes_per_second.max(1))
    }
}

/// Reads a whole body, up to `limit` bytes, within the body deadline. A body that arrives in one
/// chunk (most small JSON bodies) is that chunk, not a copy of it.
pub async fn read(
    mut payload: Payload,
    limits: &BodyLimits,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let start = Instant::now();
    let pace = Pace::of(limits);
    // The body while it is one chunk; once a second arrives, both go to `buf`.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let received = first.as_ref().map_or(buf.len(), Bytes::len);
        let deadline = pace.deadline(start, received);
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(GatewayError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|e| {
                GatewayError::MalformedJson(format!("reading the body failed: {e}"))
            })?,
        };
        if received + chunk.len() > limit {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        if let Some(held) = first.take() {
            buf.reserve(held.len() + chunk.len());
            buf.extend_from_slice(&held);
            buf.extend_from_slice(&chunk);
        } else if buf.is_empty() {
            first = Some(chunk);
        } else {
            buf.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Reads a whole body ([`read`]) and undoes its `Content-Encoding` ([`decode`]); says whether
/// anything was decoded (the header must then not be forwarded).
pub async fn read_decoded(
    payload: Payload,
    headers: &actix_web::http::header::HeaderMap,
    limits: &BodyLimits,
    limit: usize,
) -> Result<(Bytes, bool), GatewayError> {
    let codings = encodings(headers)?;
    let body = read(payload, limits, limit).await?;
    if codings.is_empty() {
        return Ok((body, false));
    }
    Ok((decode(body, &codings, limit)?, true))
}

/// The body's content codings, in the order they were applied (`identity` dropped).
pub fn encodings(
    headers: &actix_web::http::header::HeaderMap,
) -> Result<Vec<Coding>, GatewayError> {
    let mut out = Vec::new();
    for v in headers.get_all(actix_web::http::header::CONTENT_ENCODING) {
        let v = v.to_str().map_err(|_| GatewayError::UnsupportedEncoding {
            encoding: "(not ASCII)".into(),
        })?;
        for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let coding = match token.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                _ => {
                    return Err(GatewayError::UnsupportedEncoding {
                        encoding: token.chars().take(32).collect(),
                    });
                }
            };
            out.push(coding);
        }
    }
    if out.len() > MAX_ENCODINGS {
        return Err(GatewayError::UnsupportedEncoding {
            encoding: format!("{} layers of encoding", out.len()),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// Reads at most `limit` decoded bytes; one more means the body is over the limit.
fn read_bounded(mut r: impl Read, limit: usize, coding: Coding) -> Result<Vec<u8>, GatewayError> {
    let mut out = Vec::new();
    (&mut r)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GatewayError::InvalidEncoding {
            encoding: coding.name(),
            detail: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    Ok(out)
}

/// Undoes `codings` (last applied first), never producing more than `limit` bytes.
pub fn decode(mut body: Bytes, codings: &[Coding], limit: usize) -> Result<Bytes, GatewayError> {
    for &coding in codings.iter().rev() {
        let out = match coding {
            Coding::Gzip => {
                read_bounded(flate2::read::MultiGzDecoder::new(&body[..]), limit, coding)?
            }
            // `deflate` is zlib-wrapped by the RFC, but some clients send raw deflate.
            Coding::Deflate if body.first().is_some_and(|b| b & 0x0f == 8) => {
                match read_bounded(flate2::read::ZlibDecoder::new(&body[..]), limit, coding) {
                    Err(GatewayError::InvalidEncoding { .. }) => {
                        read_bounded(flate2::read::DeflateDecoder::new(&body[..]), limit, coding)?
                    }
                    other => other?,
                }
            }
            Coding::Deflate => {
                read_bounded(flate2::read::DeflateDecoder::new(&body[..]), limit, coding)?
            }
            Coding::Brotli => {
                read_bounded(brotli::Decompressor::new(&body[..], 4096), limit, coding)?
            }
        };
        body = Bytes::from(out);
    }
    Ok(body)
}

/// What a streamed upload must satisfy, checked as it passes.
pub struct ModelRule {
    pub allowed: Vec<String>,
    pub boundary: String,
}

/// Where a streamed body records why it was cut off, for the handler to answer with.
pub type Verdict = Rc<RefCell<Option<GatewayError>>>;

/// The multipart `model` field, as it is found.
#[derive(Default)]
struct FormState {
    model: Option<String>,
    finished: bool,
    failed: Option<String>,
}

/// Reads a multipart form as its bytes pass, recording its `model` field (every other field is
/// skipped as it streams).
async fn parse_form(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    boundary: String,
    form: &RefCell<FormState>,
) {
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("model", 1024));
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    loop {
        match mp.next_field().await {
            Ok(Some(mut field)) => {
                if field.name() != Some("model") {
                    while let Ok(Some(_)) = field.chunk().await {}
                    continue;
                }
                let text = field.text().await;
                let mut f = form.borrow_mut();
                match text {
                    Ok(_) if f.model.is_some() => {
                        f.failed = Some("the form names model twice".into());
                        return;
                    }
                    Ok(t) => f.model = Some(t),
                    Err(e) => {
                        f.failed = Some(e.to_string());
                        return;
                    }
                }
            }
            Ok(None) => {
                form.borrow_mut().finished = true;
                return;
            }
            Err(e) => {
                form.borrow_mut().failed = Some(e.to_string());
                return;
            }
        }
    }
}

/// Streams an upload to the upstream within the body deadline and `limit`, checking the
/// multipart `model` field against `rule` when there is one. On a violation the stream ends with
/// an error (aborting the upstream request) and `verdict` says why.
pub fn stream_upload(
    payload: Payload,
    pace: Pace,
    limit: usize,
    rule: Option<ModelRule>,
    verdict: Verdict,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let check = rule.map(|rule| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let form = Rc::new(RefCell::new(FormState::default()));
        let parsed = Rc::new(tokio::sync::Notify::new());
        let (f, p) = (form.clone(), parsed.clone());
        actix_web::rt::spawn(async move {
            parse_form(rx, rule.boundary, &f).await;
            p.notify_one();
        });
        FormCheck {
            tx: Some(tx),
            form,
            parsed,
            allowed: rule.allowed,
            held: None,
        }
    });
    let upload = Upload {
        payload,
        pace,
        start: Instant::now(),
        received: 0,
        limit,
        check,
        verdict,
        done: false,
    };
    futures_util::stream::unfold(upload, |mut up| async move {
        let item = up.next_item().await?;
        Some((item, up))
    })
}

/// One streamed upload in progress: everything it needs lives here, so no chunk costs a copy of
/// the settings.
struct Upload {
    payload: Payload,
    pace: Pace,
    start: Instant,
    received: usize,
    limit: usize,
    check: Option<FormCheck>,
    verdict: Verdict,
    done: bool,
}

/// The allowlist check of a multipart form, fed the chunks as they pass; the latest chunk is held
/// back until the parser has seen it.
struct FormCheck {
    tx: Option<tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>>,
    form: Rc<RefCell<FormState>>,
    /// Told when the parser has finished or failed.
    parsed: Rc<tokio::sync::Notify>,
    allowed: Vec<String>,
    held: Option<Bytes>,
}

impl FormCheck {
    /// A refused model is refused as soon as the parser reaches it; at the end, a form naming no
    /// model is refused too.
    fn judge(&self, at_end: bool) -> Result<(), GatewayError> {
        let form = self.form.borrow();
        let refused = |model: Option<String>| GatewayError::ModelNotAllowed {
            model,
            allowed: self.allowed.join(", "),
        };
        if let Some(m) = &form.model
            && !infergate_policy::model_allowed(&self.allowed, m)
        {
            return Err(refused(Some(m.clone())));
        }
        if let Some(why) = &form.failed {
            return Err(GatewayError::MalformedJson(format!(
                "the multipart form could not be read: {why}"
            )));
        }
        if at_end && form.model.is_none() {
            return Err(refused(None));
        }
        Ok(())
    }

    /// Closes the parser's input and waits for its verdict on the whole form.
    async fn finish(&mut self) -> Result<(), GatewayError> {
        drop(self.tx.take());
        let settled = {
            let f = self.form.borrow();
            f.finished || f.failed.is_some()
        };
        if !settled
            && tokio::time::timeout(Duration::from_secs(5), self.parsed.notified())
                .await
                .is_err()
        {
            return Err(GatewayError::MalformedJson(
                "the multipart form did not end".into(),
            ));
        }
        self.judge(true)
    }
}

impl Upload {
    /// Records why the upload was cut off and ends the stream with an error.
    fn fail(&mut self, e: GatewayError) -> Option<Result<Bytes, actix_web::Error>> {
        *self.verdict.borrow_mut() = Some(e);
        self.done = true;
        Some(Err(actix_web::error::ErrorBadRequest(
            "request body refused",
        )))
    }

    async fn next_item(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        if self.done {
            return None;
        }
        loop {
            let deadline = self.pace.deadline(self.start, self.received);
            let chunk = match tokio::time::timeout_at(deadline, self.payload.next()).await {
                Err(_) => return self.fail(GatewayError::BodyTimeout),
                Ok(Some(Err(e))) => {
                    return self.fail(GatewayError::MalformedJson(format!(
                        "reading the body failed: {e}"
                    )));
                }
                Ok(Some(Ok(c))) => c,
                Ok(None) => {
                    self.done = true;
                    let Some(check) = &mut self.check else {
                        return None;
                    };
                    // The whole form has been seen: judge it before the last bytes go.
                    if let Err(e) = check.finish().await {
                        return self.fail(e);
                    }
                    return check.held.take().map(Ok);
                }
            };
            self.received += chunk.len();
            if self.received > self.limit {
                let limit = self.limit;
                return self.fail(GatewayError::PayloadTooLarge { limit });
            }
            let Some(check) = &mut self.check else {
                return Some(Ok(chunk));
            };
            if let Some(tx) = &check.tx
                && tx.send(Ok(chunk.clone())).await.is_err()
            {
                // The parser stopped early: it failed or saw the end; judged below.
                check.tx = None;
            }
            if let Err(e) = check.judge(false) {
                return self.fail(e);
            }
            if let Some(prev) = check.held.replace(chunk) {
                return Some(Ok(prev));
            }
        }
    }
}

/// The multipart boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn payload(chunks: &[&'static str]) -> Payload {
        let items: Vec<Result<Bytes, actix_web::error::PayloadError>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        let stream: actix_http::BoxedPayloadStream = Box::pin(futures_util::stream::iter(items));
        Payload::from(stream)
    }

    fn limits() -> BodyLimits {
        BodyLimits {
            default_bytes: 1024,
            routes: Default::default(),
            uploads: Vec::new(),
            timeout: Duration::from_secs(30),
            min_bytes_per_second: 1,
        }
    }

    #[actix_rt::test]
    async fn a_body_is_its_chunks_in_order_and_one_chunk_is_not_copied() {
        let one = Bytes::from_static(br#"{"model":"m"}"#);
        let stream: actix_http::BoxedPayloadStream =
            Box::pin(futures_util::stream::iter([Ok(one.clone())]));
        let read_one = read(Payload::from(stream), &limits(), 64).await.unwrap();
        assert_eq!(read_one, one);
        assert_eq!(
            read_one.as_ptr(),
            one.as_ptr(),
            "a single chunk is passed on, not copied"
        );

        let body = read(payload(&[r#"{"mo"#, r#"del":"#, r#""m"}"#]), &limits(), 64).await;
        assert_eq!(&body.unwrap()[..], br#"{"model":"m"}"#);
        assert_eq!(&read(payload(&[]), &limits(), 64).await.unwrap()[..], b"");
    }

    #[actix_rt::test]
    async fn a_body_over_its_limit_across_chunks_is_refused() {
        let limit = 10;
        let over = read(payload(&["123456", "78901"]), &limits(), limit).await;
        assert!(matches!(
            over,
            Err(GatewayError::PayloadTooLarge { limit: 10 })
        ));
        let at = read(payload(&["12345", "67890"]), &limits(), limit).await;
        assert_eq!(&at.unwrap()[..], b"1234567890");
    }

    #[test]
    fn decodes_each_coding_and_stops_a_bomb_at_the_limit() {
        let plain = br#"{"prompt":"hi"}"#;
        let gz = Bytes::from(gzip(plain));
        assert_eq!(
            &decode(gz.clone(), &[Coding::Gzip], 1024).unwrap()[..],
            plain
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(plain).unwrap();
        let z = Bytes::from(z.finish().unwrap());
        assert_eq!(&decode(z, &[Coding::Deflate], 1024).unwrap()[..], plain);
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(plain).unwrap();
        let raw = Bytes::from(raw.finish().unwrap());
        assert_eq!(&decode(raw, &[Coding::Deflate], 1024).unwrap()[..], plain);
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(plain)
            .unwrap();
        assert_eq!(
            &decode(Bytes::from(br), &[Coding::Brotli], 1024).unwrap()[..],
            plain
        );
        // 100 MiB of zeros compresses to ~100 KiB; decoding stops at the limit.
        let bomb = Bytes::from(gzip(&vec![0u8; 100 * 1024 * 1024]));
        assert!(matches!(
            decode(bomb, &[Coding::Gzip], 1024 * 1024),
            Err(GatewayError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"not gzip"), &[Coding::Gzip], 1024),
            Err(GatewayError::InvalidEncoding { .. })
        ));
        // Two layers, applied gzip then gzip.
        let twice = Bytes::from(gzip(&gzip(plain)));
        assert_eq!(
            &decode(twice, &[Coding::Gzip, Coding::Gzip], 1024).unwrap()[..],
            plain
        );
    }
}
