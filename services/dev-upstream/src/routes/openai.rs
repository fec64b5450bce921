//! The OpenAI-compatible routes: `/v1/models`, chat and text completions (with SSE streaming and
//! `stream_options.include_usage`), embeddings and audio transcription, all echoing their input.

use std::convert::Infallible;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::read_body;
use crate::{
    AppState,
    error::ApiError,
    fields::{self, Object},
    text,
};

pub(super) async fn openai_models(state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<Value> = state
        .models()
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "infergate-dev" }))
        .collect();
    HttpResponse::Ok().json(json!({ "object": "list", "data": data }))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn finish_reason(truncated: bool) -> &'static str {
    if truncated { "length" } else { "stop" }
}

/// Text of an OpenAI message `content`: a string, null, or an array of parts of which only the
/// `text` parts matter to an echo model.
fn message_text(msg: &Object, path: &str) -> Result<String, ApiError> {
    let content_path = format!("{path}.content");
    match msg.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let part_path = format!("{content_path}[{i}]");
                let part = fields::as_object(part, &part_path)?;
                if fields::opt_str(part, &part_path, "type")? == Some("text") {
                    texts.push(fields::req_str(part, &part_path, "text")?);
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(ApiError::invalid_field(
            &content_path,
            format!(
                "field `{content_path}` must be a string, an array of parts or null, got {}",
                fields::kind(other)
            ),
        )),
    }
}

fn max_tokens(obj: &Object) -> Result<Option<u64>, ApiError> {
    Ok(
        fields::opt_u64(obj, "", "max_completion_tokens")?.or(fields::opt_u64(
            obj,
            "",
            "max_tokens",
        )?),
    )
}

fn include_usage(obj: &Object) -> Result<bool, ApiError> {
    match obj.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(v) => {
            let opts = fields::as_object(v, "stream_options")?;
            Ok(fields::opt_bool(opts, "stream_options", "include_usage")?.unwrap_or(false))
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Counts a stream dropped before its end.
struct CancelGuard {
    observed: std::sync::Arc<crate::Observed>,
    finished: bool,
}

impl CancelGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.observed
                .cancelled_streams
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `x-dev-output-tokens: N`: produce exactly N tokens whatever `max_tokens` says (how a test
/// makes an upstream overrun the reservation a gateway made).
fn forced_output(req: &HttpRequest) -> Result<Option<usize>, ApiError> {
    match req.headers().get("x-dev-output-tokens") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n <= 100_000)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_dev_header",
                    "header `x-dev-output-tokens` must be an integer from 0 to 100000",
                )
            }),
    }
}

/// The reply: the echo cut to `max_tokens`, or the forced number of tokens.
fn reply(input: &str, max_tokens: Option<u64>, forced: Option<usize>) -> (String, usize, bool) {
    match forced {
        Some(n) => (text::forced_reply(n), n, false),
        None => text::echo_reply(input, max_tokens),
    }
}

/// One SSE event, and whether the token delay should be waited before sending it.
struct SseEvent {
    delayed: bool,
    data: String,
}

impl SseEvent {
    fn json(delayed: bool, v: &Value) -> Self {
        Self {
            delayed,
            data: v.to_string(),
        }
    }
}

/// Emits each event as its own body chunk, sleeping between word chunks, so clients (and the
/// gateway's streaming tests) observe genuinely incremental delivery rather than one buffered
/// body.
///
/// A stream dropped before its last event (the client, or a gateway, hung up) is counted in
/// [`crate::Observed::cancelled_streams`]: tests see an abort arrive.
fn sse_response(state: &AppState, mut events: Vec<SseEvent>) -> HttpResponse {
    let token_delay = state.token_delay;
    events.push(SseEvent {
        delayed: false,
        data: "[DONE]".to_owned(),
    });
    let total = events.len();
    let mut guard = CancelGuard {
        observed: state.observed.clone(),
        finished: false,
    };
    let body = stream::iter(events.into_iter().enumerate()).then(move |(i, ev)| async move {
        if ev.delayed && !token_delay.is_zero() {
            tokio::time::sleep(token_delay).await;
        }
        (i, Bytes::from(format!("data: {}\n\n", ev.data)))
    });
    let body = body.map(move |(i, bytes)| {
        if i + 1 == total {
            guard.finish();
        }
        Ok::<_, Infallible>(bytes)
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Stops nginx-style reverse proxies in demo setups from buffering the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

pub(super) async fn chat_completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let forced = forced_output(&req)?;
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    let model =
        fields::opt_str(&obj, "", "model")?.map_or_else(|| state.default_model(), str::to_owned);
    let messages = fields::req_array(&obj, "", "messages")?;
    if messages.is_empty() {
        return Err(ApiError::invalid_field(
            "messages",
            "field `messages` must contain at least one message",
        ));
    }
    let mut prompt_tokens = 0;
    let mut last_user = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let msg = fields::as_object(msg, &path)?;
        let role = fields::req_str(msg, &path, "role")?;
        let content = message_text(msg, &path)?;
        prompt_tokens += text::count_words(&content);
        if role == "user" {
            last_user = content;
        }
    }
    let max_tokens = max_tokens(&obj)?;
    let stream = fields::opt_bool(&obj, "", "stream")?.unwrap_or(false);
    let include_usage = include_usage(&obj)?;
    let id = text::stable_id("chatcmpl", &body);
    let created = now();
    let (reply, completion_tokens, truncated) = reply(&last_user, max_tokens, forced);

    if !stream {
        return Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "infergate-dev",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": reply },
                "logprobs": null,
                "finish_reason": finish_reason(truncated),
            }],
            "usage": usage(prompt_tokens, completion_tokens),
        })));
    }

    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "infergate-dev",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut pieces = text::pieces(&reply);
    if pieces.is_empty() {
        // A zero-token reply still announces the assistant role, as OpenAI does.
        pieces.push("");
    }
    let mut events: Vec<SseEvent> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let delta = if i == 0 {
                json!({ "role": "assistant", "content": piece })
            } else {
                json!({ "content": piece })
            };
            SseEvent::json(i > 0, &chunk(delta, Value::Null))
        })
        .collect();
    events.push(SseEvent::json(
        false,
        &chunk(json!({}), json!(finish_reason(truncated))),
    ));
    if include_usage {
        events.push(SseEvent::json(
            false,
            &json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "infergate-dev",
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }),
        ));
    }
    Ok(sse_response(&state, events))
}

pub(super) async fn completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let forced = forced_output(&req)?;
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    let model =
        fields::opt_str(&obj, "", "model")?.map_or_else(|| state.default_model(), str::to_owned);
    let prompts = fields::req_str_or_strs(&obj, "", "prompt")?;
    let max_tokens = fields::opt_u64(&obj, "", "max_tokens")?;
    let stream = fields::opt_bool(&obj, "", "stream")?.unwrap_or(false);
    let include_usage = include_usage(&obj)?;
    let id = text::stable_id("cmpl", &body);
    let created = now();

    let prompt_tokens: usize = prompts.iter().map(|p| text::count_words(p)).sum();
    let replies: Vec<(String, usize, bool)> = prompts
        .iter()
        .map(|p| reply(p, max_tokens, forced))
        .collect();
    let completion_tokens: usize = replies.iter().map(|r| r.1).sum();

    if !stream {
        let choices: Vec<Value> = replies
            .iter()
            .enumerate()
            .map(|(i, (reply, _, truncated))| {
                json!({
                    "index": i,
                    "text": reply,
                    "logprobs": null,
                    "finish_reason": finish_reason(*truncated),
                })
            })
            .collect();
        return Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
        })));
    }

    let chunk = |index: usize, text: &str, finish: Value| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{ "index": index, "text": text, "logprobs": null, "finish_reason": finish }],
        })
    };
    let mut events = Vec::new();
    for (index, (reply, _, truncated)) in replies.iter().enumerate() {
        for piece in text::pieces(reply) {
            let delayed = !events.is_empty();
            events.push(SseEvent::json(delayed, &chunk(index, piece, Value::Null)));
        }
        events.push(SseEvent::json(
            false,
            &chunk(index, "", json!(finish_reason(*truncated))),
        ));
    }
    if include_usage {
        events.push(SseEvent::json(
            false,
            &json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }),
        ));
    }
    Ok(sse_response(&state, events))
}

pub(super) async fn embeddings(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    let model =
        fields::opt_str(&obj, "", "model")?.map_or_else(|| state.default_model(), str::to_owned);
    let inputs = fields::req_str_or_strs(&obj, "", "input")?;
    let base64 = match fields::opt_str(&obj, "", "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "encoding_format",
                format!("field `encoding_format` must be \"float\" or \"base64\", got {other:?}"),
            ));
        }
    };
    if let Some(dims) = fields::opt_u64(&obj, "", "dimensions")?
        && dims != text::EMBEDDING_DIMS as u64
    {
        return Err(ApiError::invalid_field(
            "dimensions",
            format!(
                "field `dimensions` must be {} (the only size this server produces), got {dims}",
                text::EMBEDDING_DIMS
            ),
        ));
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let v = text::embedding(input);
            let embedding = if base64 {
                json!(text::embedding_base64(&v))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let prompt_tokens: usize = inputs.iter().map(|i| text::count_words(i)).sum();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })))
}

/// An OpenAI-shaped transcription: counts the upload's bytes as they stream in (never buffering
/// them), so uploads far larger than any JSON body can be checked end to end.
pub(super) async fn transcription(
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt;
    let mut bytes = 0usize;
    let mut digest = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "body_read_failed",
                format!("could not read request body: {e}"),
            )
        })?;
        bytes += chunk.len();
        // A cheap order-sensitive checksum, so a test can tell the bytes arrived unchanged.
        for b in chunk.iter() {
            digest = digest.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(HttpResponse::Ok().json(json!({
        "text": format!("received {bytes} bytes"),
        "bytes": bytes,
        "checksum": digest.to_string(),
        "content_type": content_type,
    })))
}
