//! Route handlers and the latency / forced-status middleware.

use std::time::Duration;

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{StatusCode, header::HeaderMap},
    middleware::Next,
    web,
};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    fields::{self, MAX_BODY_BYTES, Object},
    text,
};

mod openai;

use self::openai::{chat_completions, completions, embeddings, openai_models, transcription};

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
