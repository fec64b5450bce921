//! The response side of a reservation: counts what the upstream produces as it passes, takes
//! the usage chunk out of a stream the client did not ask it for, ends a stream that overruns
//! its reservation, and hands what it saw to the [`Reservation`], which settles when this body
//! is dropped (at its end, or when the client goes away mid-stream).
//!
//! Streams are metered by counting content-bearing choices: one token per chunk that carries
//! text, reasoning or a tool call. Every server that streams token by token (vLLM, llama.cpp,
//! OpenAI) sends at least one token in such a chunk, so the count never runs ahead of the
//! upstream's and never cuts a stream early; a server that batches tokens into chunks is
//! undercounted until its usage chunk, which settles exactly.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;

use super::{Reservation, Usage};

/// The tail of a JSON response kept for its `usage` (OpenAI-style servers write it last).
const JSON_TAIL: usize = 64 * 1024;

/// An SSE event longer than this is passed on unparsed (no server sends such chunks; a hostile
/// one must not make the gateway buffer without bound).
const MAX_EVENT: usize = 1024 * 1024;

enum Kind {
    Sse {
        /// Bytes of an event not yet complete.
        partial: BytesMut,
        /// Take the usage chunk out: the gateway asked for it, the client did not.
        strip_usage: bool,
        /// End the stream once more output than this was produced.
        cut_after: Option<u64>,
    },
    Json {
        tail: Vec<u8>,
    },
}

/// A response body, metered (see the module doc).
pub struct Metered<S> {
    inner: Option<S>,
    reservation: Reservation,
    kind: Kind,
    ready: std::collections::VecDeque<Bytes>,
    ended: bool,
}

impl<S> Metered<S> {
    /// `sse`: the response is an event stream; `strip_usage`, `cut_after` as in [`Kind::Sse`].
    pub fn new(
        inner: S,
        reservation: Reservation,
        sse: bool,
        strip_usage: bool,
        cut_after: Option<u64>,
    ) -> Self {
        let kind = if sse {
            Kind::Sse {
                partial: BytesMut::new(),
                strip_usage,
                cut_after,
            }
        } else {
            Kind::Json { tail: Vec::new() }
        };
        Self {
            inner: Some(inner),
            reservation,
            kind,
            ready: std::collections::VecDeque::new(),
            ended: false,
        }
    }
}

/// Where the first complete SSE event in `buf` ends (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of one event (its data lines joined), if any.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let d = data.get_or_insert_with(Vec::new);
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(rest);
        }
    }
    data
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// Output tokens one chunk carries, by the rule in the module doc.
fn chunk_tokens(chunk: &Value) -> u64 {
    let mut n = 0;
    if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
        for c in choices {
            let delta = c.get("delta");
            let carries = non_empty_str(c.get("text"))
                || delta.is_some_and(|d| {
                    non_empty_str(d.get("content"))
                        || non_empty_str(d.get("reasoning_content"))
                        || non_empty_str(d.get("reasoning"))
                        || d.get("tool_calls")
                            .and_then(Value::as_array)
                            .is_some_and(|t| !t.is_empty())
                });
            n += u64::from(carries);
        }
    }
    // The Responses API: `response.output_text.delta` and its kin.
    if chunk
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(".delta"))
        && non_empty_str(chunk.get("delta"))
    {
        n += 1;
    }
    n
}

/// The usage an object reports (`usage`, or the Responses API's `response.usage`).
pub(super) fn usage_of(v: &Value) -> Option<Usage> {
    let u = v
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| v.get("response")?.get("usage").filter(|u| u.is_object()))?;
    let field = |names: &[&str]| names.iter().find_map(|n| u.get(*n)?.as_u64());
    Some(Usage {
        input: field(&["prompt_tokens", "input_tokens"]).unwrap_or(0),
        output: field(&["completion_tokens", "output_tokens"]).unwrap_or(0),
    })
}

/// The `usage` object at the end of a JSON response, from its kept tail.
fn usage_in_tail(tail: &[u8]) -> Option<Usage> {
    const NEEDLE: &[u8] = b"\"usage\"";
    let at = tail.windows(NEEDLE.len()).rposition(|w| w == NEEDLE)?;
    let rest = &tail[at + NEEDLE.len()..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let mut values = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<Value>();
    let usage = values.next()?.ok()?;
    usage_of(&serde_json::json!({ "usage": usage }))
}

/// The event that ends a stream the upstream overran: OpenAI's SDKs raise it as an API error.
fn cut_event(reserved: u64) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": format!(
                "The model produced more than the {reserved} output tokens this request reserved; the gateway ended the stream"
            ),
            "type": "token_limit_exceeded",
            "code": "token_limit_exceeded",
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

impl<S> Metered<S> {
    /// One complete SSE event: counted, and passed on, dropped (a usage chunk the client did
    /// not ask for) or replaced by the cut event.
    fn event(&mut self, event: Bytes) {
        let Kind::Sse {
            strip_usage,
            cut_after,
            ..
        } = &self.kind
        else {
            self.ready.push_back(event);
            return;
        };
        let (strip_usage, cut_after) = (*strip_usage, *cut_after);
        let parsed = event_data(&event)
            .filter(|d| d.as_slice() != b"[DONE]")
            .and_then(|d| serde_json::from_slice::<Value>(&d).ok());
        let Some(chunk) = parsed else {
            self.ready.push_back(event);
            return;
        };
        let r = &mut self.reservation;
        r.metered_output = r.metered_output.saturating_add(chunk_tokens(&chunk));
        let usage = usage_of(&chunk);
        if let Some(u) = usage {
            r.usage = Some(u);
        }
        if let Some(limit) = cut_after {
            let produced = usage.map_or(r.metered_output, |u| u.output.max(r.metered_output));
            if produced > limit {
                r.cut = true;
                self.ready.push_back(cut_event(limit));
                self.ended = true;
                // Dropping the upstream response closes its connection: the model server sees
                // the client gone and stops generating.
                self.inner = None;
                return;
            }
        }
        let usage_only = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && usage.is_some();
        if !(strip_usage && usage_only) {
            self.ready.push_back(event);
        }
    }

    fn chunk(&mut self, chunk: Bytes) {
        match &mut self.kind {
            Kind::Json { tail } => {
                self.reservation.body_bytes += chunk.len() as u64;
                tail.extend_from_slice(&chunk);
                if tail.len() > 2 * JSON_TAIL {
                    tail.drain(..tail.len() - JSON_TAIL);
                }
                self.ready.push_back(chunk);
            }
            Kind::Sse { partial, .. } => {
                partial.extend_from_slice(&chunk);
                let mut events = Vec::new();
                while let Some(end) = event_end(partial) {
                    events.push(partial.split_to(end).freeze());
                }
                if partial.len() > MAX_EVENT {
                    events.push(partial.split().freeze());
                }
                for e in events {
                    if self.ended {
                        break;
                    }
                    self.event(e);
                }
            }
        }
    }

    fn finish(&mut self) {
        match &mut self.kind {
            Kind::Json { tail } => {
                if let Some(u) = usage_in_tail(tail) {
                    self.reservation.usage = Some(u);
                }
            }
            Kind::Sse { partial, .. } => {
                if !partial.is_empty() {
                    let rest = partial.split().freeze();
                    self.event(rest);
                }
            }
        }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut() else {
                this.ended = true;
                continue;
            };
            match Pin::new(inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.chunk(chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.inner = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.inner = None;
                    this.finish();
                    this.ended = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_split_on_blank_lines_of_either_ending() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
        assert_eq!(
            event_data(b"event: x\ndata: {\"a\":\ndata: 1}\n\n").unwrap(),
            b"{\"a\":\n1}"
        );
    }

    #[test]
    fn content_bearing_choices_count_one_token_each() {
        let c = json!({"choices": [{"delta": {"content": "Hi"}}, {"delta": {"content": ""}}]});
        assert_eq!(chunk_tokens(&c), 1);
        let c = json!({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]});
        assert_eq!(chunk_tokens(&c), 1);
        let c = json!({"choices": [{"text": "x", "index": 0}]});
        assert_eq!(chunk_tokens(&c), 1);
        let c = json!({"type": "response.output_text.delta", "delta": "x"});
        assert_eq!(chunk_tokens(&c), 1);
        assert_eq!(chunk_tokens(&json!({"choices": [], "usage": {}})), 0);
    }

    #[test]
    fn usage_is_read_from_the_end_of_a_json_body() {
        let body = br#"{"id":"x","choices":[{"text":"usage"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(
            usage_in_tail(body),
            Some(Usage {
                input: 7,
                output: 3
            })
        );
        let responses = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 5, "output_tokens": 2}}});
        assert_eq!(
            usage_of(&responses),
            Some(Usage {
                input: 5,
                output: 2
            })
        );
        assert_eq!(usage_in_tail(b"{\"usage\": null}"), None);
    }
}
