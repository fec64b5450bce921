//! Route handlers and the latency / forced-status middleware.

use std::{convert::Infallible, time::Duration};

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{self, HeaderMap},
    },
    middleware::Next,
    web,
};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    fields::{self, MAX_BODY_BYTES, Object},
    text,
};

const DELAY_HEADER: &str = "x-dev-delay-ms";
const STATUS_HEADER: &str = "x-dev-status";
/// Long enough to outlast any sane gateway upstream timeout, short enough that a typo cannot
/// wedge a test run for hours.
const MAX_EXTRA_DELAY_MS: u64 = 60_000;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health").route(web::get().to(health)))
        .service(resource("/models").route(web::get().to(list_models)))
        .service(resource("/models/load").route(web::post().to(load_model)))
        .service(resource("/inference").route(web::post().to(inference)))
        .service(resource("/inference/batch").route(web::post().to(inference_batch)))
        .service(resource("/v1/models").route(web::get().to(openai_models)))
        .service(resource("/v1/chat/completions").route(web::post().to(chat_completions)))
        .service(resource("/v1/completions").route(web::post().to(completions)))
        .service(resource("/v1/embeddings").route(web::post().to(embeddings)))
        .service(
            web::resource(["/v1/audio/transcriptions", "/v1/audio/translations"])
                .route(web::post().to(transcription))
                .default_service(web::to(method_not_allowed)),
        )
        // Sub-paths are echoed too so the gateway's path-rewriting can be checked end to end.
        .service(
            web::resource([
                "/debug/request",
                "/debug/request/{tail:.*}",
                "/v1/debug/request",
                "/v1/debug/request/{tail:.*}",
            ])
            .to(debug_request),
        );
}

/// A resource whose wrong-method requests get a JSON 405 instead of actix's empty body.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
    .error_response()
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Applies `cfg.latency`, `X-Dev-Delay-Ms` and `X-Dev-Status` uniformly, including to 404s, so
/// the gateway's timeout and error-pass-through tests can target any path.
pub(crate) async fn dev_controls(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let latency = req
        .app_data::<web::Data<AppState>>()
        .map_or(Duration::ZERO, |s| s.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (extra, forced) = match parse_dev_headers(req.headers()) {
        Ok(v) => v,
        Err(e) => return Ok(req.error_response(e)),
    };
    if !extra.is_zero() {
        tokio::time::sleep(extra).await;
    }
    if let Some(status) = forced {
        tracing::debug!(%status, path = req.path(), "forced status");
        return Ok(req.into_response(forced_response(status)));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn parse_dev_headers(headers: &HeaderMap) -> Result<(Duration, Option<StatusCode>), ApiError> {
    let header_u64 = |name: &str| -> Result<Option<u64>, ApiError> {
        let Some(raw) = headers.get(name) else {
            return Ok(None);
        };
        raw.to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_dev_header",
                    format!("header `{name}` must be a non-negative integer"),
                )
            })
    };
    let delay = match header_u64(DELAY_HEADER)? {
        None => Duration::ZERO,
        Some(ms) if ms <= MAX_EXTRA_DELAY_MS => Duration::from_millis(ms),
        Some(ms) => {
            return Err(ApiError::bad_request(
                "invalid_dev_header",
                format!("header `{DELAY_HEADER}` must be at most {MAX_EXTRA_DELAY_MS}, got {ms}"),
            ));
        }
    };
    let status = match header_u64(STATUS_HEADER)? {
        None => None,
        Some(code) => {
            // 1xx cannot carry a final response, so only real final statuses are allowed.
            let valid = u16::try_from(code)
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok());
            match valid {
                Some(s) => Some(s),
                None => {
                    return Err(ApiError::bad_request(
                        "invalid_dev_header",
                        format!(
                            "header `{STATUS_HEADER}` must be a status code in 200..=599, got {code}"
                        ),
                    ));
                }
            }
        }
    };
    Ok((delay, status))
}

fn forced_response(status: StatusCode) -> HttpResponse {
    // These statuses must not carry a body on the wire.
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return HttpResponse::build(status).finish();
    }
    HttpResponse::build(status).json(json!({
        "error": "dev_forced_status",
        "detail": format!("status {} forced by X-Dev-Status header", status.as_u16()),
        "status": status.as_u16(),
    }))
}

async fn read_body(payload: web::Payload) -> Result<Bytes, ApiError> {
    match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("could not read request body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )),
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn list_models(state: web::Data<AppState>) -> HttpResponse {
    let models: Vec<Value> = state
        .models()
        .into_iter()
        .map(|id| json!({ "id": id, "loaded": true }))
        .collect();
    HttpResponse::Ok().json(json!({ "models": models }))
}

async fn load_model(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    // The FastAPI seed names the field `model_name`.
    let field = if obj.contains_key("model_name") && !obj.contains_key("model") {
        "model_name"
    } else {
        "model"
    };
    let model = fields::req_str(&obj, "", field)?;
    state.load(model);
    Ok(HttpResponse::Ok().json(json!({ "status": "loaded", "model": model })))
}

fn run_inference(state: &AppState, obj: &Object, prefix: &str) -> Result<Value, ApiError> {
    let prompt = fields::req_str(obj, prefix, "prompt")?;
    let model =
        fields::opt_str(obj, prefix, "model")?.map_or_else(|| state.default_model(), str::to_owned);
    let max_tokens = fields::opt_u64(obj, prefix, "max_tokens")?;
    let (output, tokens, _) = text::echo_reply(prompt, max_tokens);
    Ok(json!({
        "model": model,
        "output": output,
        "tokens": tokens,
        "received_prompt": prompt,
    }))
}

async fn inference(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    Ok(HttpResponse::Ok().json(run_inference(&state, &obj, "")?))
}

async fn inference_batch(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let obj = fields::parse_object(&body)?;
    let results = fields::req_array(&obj, "", "requests")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("requests[{i}]");
            run_inference(&state, fields::as_object(item, &path)?, &path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

async fn openai_models(state: web::Data<AppState>) -> HttpResponse {
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
fn sse_response(mut events: Vec<SseEvent>, token_delay: Duration) -> HttpResponse {
    events.push(SseEvent {
        delayed: false,
        data: "[DONE]".to_owned(),
    });
    let body = stream::iter(events).then(move |ev| async move {
        if ev.delayed && !token_delay.is_zero() {
            tokio::time::sleep(token_delay).await;
        }
        Ok::<_, Infallible>(Bytes::from(format!("data: {}\n\n", ev.data)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Stops nginx-style reverse proxies in demo setups from buffering the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

async fn chat_completions(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
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
    let (reply, completion_tokens, truncated) = text::echo_reply(&last_user, max_tokens);

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
    Ok(sse_response(events, state.token_delay))
}

async fn completions(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
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
        .map(|p| text::echo_reply(p, max_tokens))
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
    Ok(sse_response(events, state.token_delay))
}

async fn embeddings(
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
async fn transcription(
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

/// Reports exactly what arrived so the gateway's tests can assert on what it forwarded
/// (stripped / injected headers, rewritten paths, untouched bodies).
async fn debug_request(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    // A BTreeMap rather than serde_json's Map: header iteration order is hash-based and the Map's
    // ordering depends on workspace feature unification (`preserve_order`), but the echo must be
    // deterministic.
    let mut headers = std::collections::BTreeMap::new();
    for name in req.headers().keys() {
        let joined = req
            .headers()
            .get_all(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_ascii_lowercase(), joined);
    }
    Ok(HttpResponse::Ok().json(json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn dev_headers_are_validated() {
        assert_eq!(
            parse_dev_headers(&headers(&[])).ok(),
            Some((Duration::ZERO, None))
        );
        assert_eq!(
            parse_dev_headers(&headers(&[
                ("x-dev-delay-ms", "25"),
                ("x-dev-status", "503")
            ]))
            .ok(),
            Some((
                Duration::from_millis(25),
                Some(StatusCode::SERVICE_UNAVAILABLE)
            ))
        );
        for bad in [
            ("x-dev-delay-ms", "60001"),
            ("x-dev-delay-ms", "-1"),
            ("x-dev-delay-ms", "soon"),
            ("x-dev-status", "99"),
            ("x-dev-status", "600"),
            ("x-dev-status", "70000"),
        ] {
            assert!(parse_dev_headers(&headers(&[bad])).is_err(), "{bad:?}");
        }
    }
}
