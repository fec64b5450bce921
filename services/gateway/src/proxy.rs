//! The reverse proxy to the model server.
//!
//! Request bodies are read up to the route's limit (413 past it, without buffering the excess),
//! checked against the route's schema, and sent upstream as they came, byte for byte. Response
//! bodies stream back unbuffered, so SSE chunks reach the client as the upstream sends them.
//! Failures are classified the pingora way: upstream unreachable → 502, too slow → 504.
//!
//! Every upstream request carries a W3C `traceparent`. With traces on it names the current trace
//! and the `upstream` client span; with traces off a valid incoming one is passed on as it came,
//! and one is made up when there is none.

use std::time::Instant;

use actix_web::body::SizedStream;
use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use infergate_policy::strip_query_param;
use infergate_telemetry::{
    TRACEPARENT, method_label, outgoing_trace_headers, traceparent_trace_id,
};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::GatewayError;
use crate::pipeline::RequestCtx;
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;
use crate::upstream::{Body as Outgoing, Pool, header_pair};
use crate::validate::{check_body, check_models, parse_json};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
pub fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// What the gateway does with a request header, by its name (besides the hop-by-hop ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passing {
    On,
    /// Never passed on: the headers the gateway sets itself from what it judged (client
    /// address, scheme, request id, trace), and the ones that would make the upstream act on
    /// another method or path than the one that was authorised.
    Never,
    /// Headers that describe the client's connection as a proxy saw it: believed (and passed on)
    /// only from a trusted proxy, dropped from anyone else.
    FromTrustedProxiesOnly,
}

fn passing(name: &str) -> Passing {
    match name {
        "x-forwarded-for"
        | "x-forwarded-proto"
        | "x-real-ip"
        | "x-request-id"
        | "traceparent"
        | "expect"
        | "x-http-method-override"
        | "x-http-method"
        | "x-method-override"
        | "x-original-url"
        | "x-original-method"
        | "x-rewrite-url" => Passing::Never,
        "forwarded"
        | "x-forwarded-host"
        | "x-forwarded-port"
        | "x-forwarded-prefix"
        | "x-forwarded-server"
        | "x-forwarded-ssl"
        | "x-forwarded-scheme"
        | "x-client-ip"
        | "x-cluster-client-ip"
        | "true-client-ip"
        | "cf-connecting-ip"
        | "fastly-client-ip" => Passing::FromTrustedProxiesOnly,
        _ => Passing::On,
    }
}

fn is_hop_by_hop(name: &str, connection: &ConnectionValues<'_>) -> bool {
    is_hop_by_hop_name(name) || connection.lists(name)
}

/// A message's `Connection` values, whose comma-separated names are hop-by-hop too; read in
/// place, not copied (nearly every upstream response carries one, `keep-alive`). The values come
/// from actix's request or hyper's response, whose header types differ.
struct ConnectionValues<'a>(smallvec::SmallVec<[&'a [u8]; 2]>);

impl<'a> ConnectionValues<'a> {
    fn of(values: impl Iterator<Item = &'a [u8]>) -> Self {
        Self(values.collect())
    }

    /// Whether `name` (a header name, lowercase) is listed.
    fn lists(&self, name: &str) -> bool {
        self.0.iter().any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        })
    }
}

/// Upload paths whose forms name a model (files and upload parts carry none).
fn carries_model(path: &str) -> bool {
    !(path.starts_with("/v1/files") || path.starts_with("/v1/uploads"))
}

/// Builds one worker's connection pool to the upstream ([`crate::upstream`]), from the settings
/// finished at startup.
pub fn pool(state: &AppState) -> Pool {
    Pool::new(state.upstream.clone())
}

/// Forwards the request upstream, recording in the request context what the edge's access log
/// and metrics read (the trace id sent, the upstream's time) and counting a key's refusals.
pub async fn forward(
    req: &HttpRequest,
    payload: Payload,
    state: &AppState,
    pool: &Pool,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let result = forward_with(req, ctx, payload, state, pool).await;
    // A key's refusals (its limits, its allowlist) count in its usage.
    if let (Err(e), Some(auth), Some(usage)) = (&result, &ctx.auth, &state.usage) {
        usage.refusal(&auth.record.id, e, state.clock.now_millis());
    }
    result
}

async fn forward_with(
    req: &HttpRequest,
    ctx: &mut RequestCtx,
    payload: Payload,
    state: &AppState,
    pool: &Pool,
) -> Result<HttpResponse, GatewayError> {
    let route = ctx
        .route
        .map(|i| &state.routes.routes()[i])
        .ok_or(GatewayError::NotFound)?;

    let path = ctx.path(req.path());
    let limits = &state.cfg.body_limits;
    // The key record (an `Arc`), not a copy of its allowlist.
    let record = ctx.auth.as_ref().map(|a| a.record.clone());
    let allowed_models = record.as_deref().and_then(|r| r.models.as_deref());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_json = content_type.is_empty()
        || content_type
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    let verdict = crate::body::Verdict::default();
    let mut decoded = false;
    let mut parsed_rewritten: Option<Bytes> = None;
    let body = async {
        Ok::<_, GatewayError>(match *req.method() {
            actix_web::http::Method::GET | actix_web::http::Method::HEAD => Outgoing::Empty,
            _ => match limits.upload(path) {
                // Uploads (multipart forms, files) stream through; only their `model` is looked at.
                Some(limit) if !is_json => {
                    if !crate::body::encodings(req.headers())?.is_empty() {
                        return Err(GatewayError::UnsupportedEncoding {
                            encoding: "Content-Encoding on an upload (send it uncompressed)".into(),
                        });
                    }
                    let rule = match allowed_models {
                        Some(allowed) if carries_model(path) => Some(crate::body::ModelRule {
                            allowed: allowed.to_vec(),
                            boundary: crate::body::multipart_boundary(content_type).ok_or(
                                GatewayError::UnsupportedMediaType {
                                    accepted: "multipart/form-data naming an allowed model, or JSON",
                                },
                            )?,
                        }),
                        _ => None,
                    };
                    Outgoing::Stream(Box::pin(crate::body::stream_upload(
                        payload,
                        crate::body::Pace::of(limits),
                        limit,
                        rule,
                        verdict.clone(),
                    )))
                }
                _ => {
                    let limit = limits.limit(&route.template, path);
                    let (body, was_encoded) =
                        crate::body::read_decoded(payload, req.headers(), limits, limit).await?;
                    decoded = was_encoded;
                    // A DELETE may come without a body; every other body on a proxied route is
                    // JSON, and an empty one is malformed (it would skip validation and the
                    // allowlist).
                    let skip = *req.method() == actix_web::http::Method::DELETE && body.is_empty();
                    if !skip {
                        // Read in place (borrowed, no value tree); the bytes are what is sent.
                        let json = parse_json(&body)?;
                        check_body(route.schema, &json)?;
                        if let Some(allowed) = allowed_models {
                            check_models(&json, allowed)?;
                        }
                    }
                    Outgoing::Full(Some(body))
                }
            },
        })
    }
    .await;

    // A key with a token budget or concurrency cap: its request counts, the reservation and the
    // slot are decided now, in one limiter call (crate::metering).
    let mut admitted = None;
    let mut strip_usage = false;
    if let Some(plan) = ctx.deferred.take() {
        let Some(record) = record.as_deref() else {
            return Err(GatewayError::Internal(
                "deferred limits without a key".into(),
            ));
        };
        if body.is_err() {
            // Refused for its body, the request still counts, as any refused request does.
            crate::pipeline::limit::enforce(state, ctx, &plan).await?;
        } else {
            // A metered key's body, as a value tree: the estimate reads it, a rewrite (default
            // cap, include_usage) edits it. It passed the strict parse above, so this parse
            // reads the same document.
            let mut parsed: Option<serde_json::Value> = match &body {
                Ok(Outgoing::Full(Some(bytes))) => serde_json::from_slice(bytes).ok(),
                _ => None,
            };
            let t = &state.limits.tokens;
            let model = parsed.as_ref().and_then(|v| v.get("model")?.as_str());
            let rules = crate::metering::estimate::EstimateRules {
                image_tokens: t.image_tokens,
                prompt_overhead_tokens: t.prompt_overhead_tokens,
                default_max_output_tokens: t.default_max_output_tokens,
                text: crate::metering::estimate::TextCounter::for_model(t.tokenizer, model),
            };
            let estimate = parsed
                .as_ref()
                .and_then(|v| crate::metering::estimate::estimate(route.schema, v, &rules));
            // Boxed: only keys with a token budget or a concurrency cap come here, and the
            // admission's future would otherwise enlarge every proxied request's.
            let a = Box::pin(crate::metering::admit(
                state,
                ctx,
                &plan,
                record,
                route.schema.metered(),
                estimate,
            ))
            .await?;
            if let (Some(json), Some(e)) = (parsed.as_mut(), estimate)
                && a.reservation.as_ref().is_some_and(|r| r.meters_tokens())
            {
                let mut changed = false;
                if e.needs_cap && t.count != infergate_config::TokenCount::Input {
                    crate::metering::estimate::apply_default_cap(
                        route.schema,
                        json,
                        t.default_max_output_tokens,
                    );
                    changed = true;
                }
                if crate::metering::estimate::streams(json) {
                    strip_usage =
                        !crate::metering::estimate::request_stream_usage(route.schema, json);
                    changed |= strip_usage;
                }
                if changed {
                    // What is forwarded is exactly the checked body with those fields added.
                    let bytes = serde_json::to_vec(json).map_err(|e| {
                        GatewayError::Internal(format!("re-encoding the body: {e}"))
                    })?;
                    parsed_rewritten = Some(Bytes::from(bytes));
                }
            }
            // Boxed: held across the upstream call, it would make every request's future larger.
            admitted = Some(Box::new(a));
        }
    }
    let mut body = body?;
    if let Some(bytes) = parsed_rewritten.take() {
        decoded = true;
        body = Outgoing::Full(Some(bytes));
    }

    // Origin-form: the upstream URL's base path, then the request's path and query.
    let mut target = String::with_capacity(pool.base_path().len() + req.uri().path().len() + 32);
    target.push_str(pool.base_path());
    target.push_str(req.uri().path());
    if let Some(q) = req.uri().query() {
        // Stripped even when the query credential is switched off: a key a client put in the URL
        // must not reach the upstream's logs either way.
        let q = strip_query_param(q, "api_key");
        if !q.is_empty() {
            target.push('?');
            target.push_str(&q);
        }
    }
    let method = http::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| {
        GatewayError::MethodNotAllowed {
            allow: route.methods.join(", "),
        }
    })?;
    // actix accepted this path, and `http` 1.x parses what `http` 0.2 did.
    let uri = http::Uri::try_from(target).map_err(|_| GatewayError::SuspiciousInput {
        location: "path",
        category: "encoding",
    })?;
    let mut up = http::Request::new(body);
    *up.method_mut() = method;
    *up.uri_mut() = uri;
    let headers = up.headers_mut();
    headers.reserve(req.headers().len() + 8);
    let listed = ConnectionValues::of(
        req.headers()
            .get_all(header::CONNECTION)
            .map(HeaderValue::as_bytes),
    );
    let from_trusted_proxy = ctx.origin.peer_trusted;
    for (name, value) in req.headers() {
        if is_hop_by_hop(name.as_str(), &listed)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::AUTHORIZATION
            || *name == state.api_key_header
            || (decoded && name == header::CONTENT_ENCODING)
            || match passing(name.as_str()) {
                Passing::On => false,
                Passing::Never => true,
                Passing::FromTrustedProxiesOnly => !from_trusted_proxy,
            }
        {
            continue;
        }
        if let Some((n, v)) = header_pair(name, value) {
            headers.append(n, v);
        }
    }
    headers.insert(http::header::HOST, pool.host().clone());
    let set = |headers: &mut http::HeaderMap, name: &'static str, value: &[u8]| {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(http::HeaderName::from_static(name), v);
        }
    };
    // From an untrusted peer (the common case) both name the peer: formatted once, and the
    // `String` becomes the header value without a copy.
    let xff = http::HeaderValue::try_from(ctx.origin.forwarded_for()).ok();
    let real_ip = if ctx.origin.peer_trusted {
        http::HeaderValue::try_from(infergate_telemetry::ip::to_string(ctx.origin.client)).ok()
    } else {
        xff.clone()
    };
    for (name, value) in [("x-forwarded-for", xff), ("x-real-ip", real_ip)] {
        if let Some(v) = value {
            headers.insert(http::HeaderName::from_static(name), v);
        }
    }
    // The gateway states what it judged, never what an untrusted client claimed.
    let proto: &'static str = if ctx.origin.https { "https" } else { "http" };
    headers.insert(
        http::HeaderName::from_static("x-forwarded-proto"),
        http::HeaderValue::from_static(proto),
    );
    set(headers, "x-request-id", ctx.request_id.as_bytes());
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "upstream",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method_label(req.method()),
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    match outgoing_trace_headers(&span) {
        Some((parent, trace_state)) => {
            if let Ok(uri) = state.cfg.upstream.url.parse::<http::Uri>() {
                if let Some(host) = uri.host() {
                    span.record("server.address", host);
                }
                if let Some(port) = uri.port_u16() {
                    span.record("server.port", i64::from(port));
                }
            }
            set(headers, "traceparent", parent.as_bytes());
            if let Some(trace_state) = trace_state {
                set(headers, "tracestate", trace_state.as_bytes());
            }
        }
        None => {
            // A valid incoming `traceparent` as it came, else a new one; either way the trace id
            // is the 32 digits after the version, which the access log names.
            let incoming = req
                .headers()
                .get(&TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .filter(|v| traceparent_trace_id(v).is_some());
            let made;
            let parent = match incoming {
                Some(v) => v,
                None => {
                    made = infergate_telemetry::ids::traceparent();
                    made.as_str()
                }
            };
            ctx.forwarded_trace_id = parent.get(3..35).map(str::to_string);
            set(headers, "traceparent", parent.as_bytes());
        }
    }
    if let Some((name, value)) = pool.credential() {
        headers.insert(name.clone(), value.clone());
    }

    let started = Instant::now();
    let result = tokio::time::timeout(state.cfg.upstream.timeout, pool.send(up))
        .instrument(span.clone())
        .await;
    if !span.is_disabled() {
        match &result {
            Ok(Ok((r, _))) => {
                span.record("http.response.status_code", i64::from(r.status().as_u16()));
                if r.status().is_server_error() {
                    span.record("error.type", r.status().as_str());
                    span.record("otel.status_code", "error");
                }
            }
            Ok(Err(_)) | Err(_) => {
                let kind = match &result {
                    Ok(Err(e)) => e.kind(),
                    _ => "timeout",
                };
                span.record("error.type", kind);
                span.record("otel.status_code", "error");
            }
        }
    }
    drop(span);
    let metrics = &state.metrics;
    let upstream_time = started.elapsed();
    metrics.observe_upstream(ctx.route, &route.template, upstream_time);
    ctx.upstream_time = Some(upstream_time);
    // A streamed upload the gateway cut off (deadline, limit, a refused model) is answered for
    // what it was, not as an upstream failure.
    if let Some(e) = verdict.borrow_mut().take() {
        return Err(e);
    }
    let response = match result {
        Err(_) => {
            metrics
                .upstream_errors
                .with_label_values(&["timeout"])
                .inc();
            return Err(GatewayError::UpstreamTimeout);
        }
        Ok(Err(e)) => {
            let kind = e.kind();
            metrics.upstream_errors.with_label_values(&[kind]).inc();
            tracing::warn!(request_id = %ctx.request_id, error = %e, kind, "upstream request failed");
            return Err(if kind == "timeout" {
                GatewayError::UpstreamTimeout
            } else {
                GatewayError::UpstreamUnavailable(e.to_string())
            });
        }
        Ok(Ok(r)) => r,
    };
    let (response, lease) = response;
    let (head, incoming) = response.into_parts();
    let Ok(status) = actix_web::http::StatusCode::from_u16(head.status.as_u16()) else {
        metrics
            .upstream_errors
            .with_label_values(&["protocol"])
            .inc();
        return Err(GatewayError::UpstreamUnavailable(
            "upstream answered with an invalid status".into(),
        ));
    };
    if status.is_informational() {
        // No route is configured for upgrades: a 101 (or a stray 1xx) must not turn this
        // connection into a tunnel past every check.
        metrics
            .upstream_errors
            .with_label_values(&["protocol"])
            .inc();
        tracing::warn!(request_id = %ctx.request_id, status = status.as_u16(), "upstream answered with an informational status; refused");
        return Err(GatewayError::UpstreamUnavailable(
            "upstream switched protocols".into(),
        ));
    }

    let sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let mut out = HttpResponse::build(status);
    let listed = ConnectionValues::of(
        head.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(http::HeaderValue::as_bytes),
    );
    let mut length = None;
    for (name, value) in &head.headers {
        if name == http::header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if is_hop_by_hop(name.as_str(), &listed) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append_header((n, v));
        }
    }
    let stream = crate::upstream::response_body(
        incoming,
        lease,
        state.cfg.upstream.idle_timeout,
        ctx.request_id.clone(),
        metrics.upstream_errors.clone(),
    );
    let Some(admitted) = admitted else {
        return Ok(match length {
            Some(len) => out.body(SizedStream::new(len, stream)),
            None => out.streaming(stream),
        });
    };
    let crate::metering::Admitted {
        reservation,
        request,
        tokens,
        shadowed,
    } = *admitted;
    let mut res = match reservation {
        None => match length {
            Some(len) => out.body(SizedStream::new(len, stream)),
            None => out.streaming(stream),
        },
        Some(mut r) => {
            r.responded = status.is_success();
            r.streamed = sse;
            let cut_after = r.output_cap().filter(|_| sse);
            let metered = crate::metering::meter::Metered::new(
                Box::pin(stream),
                r,
                sse,
                strip_usage,
                cut_after,
            );
            match length {
                // A JSON body passes through unchanged, so its length stands.
                Some(len) if !sse => out.body(SizedStream::new(len, metered)),
                _ => out.streaming(metered),
            }
        }
    };
    let now = state.clock.now_millis();
    if let Some(s) = &request {
        crate::error::rate_limit_headers(res.headers_mut(), s, now);
    }
    if let Some(s) = &tokens {
        crate::error::token_limit_headers(res.headers_mut(), s, now);
    }
    if let Some(name) = shadowed {
        res.headers_mut().insert(
            HeaderName::from_static("x-ratelimit-shadow"),
            HeaderValue::from_static(name),
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_sorted_by_name() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop_name(name), "{name}");
            assert_eq!(passing(name), Passing::On, "{name}");
        }
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-real-ip",
            "x-request-id",
            "traceparent",
            "expect",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-original-method",
            "x-rewrite-url",
        ] {
            assert_eq!(passing(name), Passing::Never, "{name}");
        }
        for name in [
            "forwarded",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-client-ip",
            "x-cluster-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
        ] {
            assert_eq!(passing(name), Passing::FromTrustedProxiesOnly, "{name}");
        }
        for name in [
            "content-type",
            "origin",
            "accept",
            "x-forwarded",
            "tes",
            "x-real-ip2",
        ] {
            assert!(!is_hop_by_hop_name(name), "{name}");
            assert_eq!(passing(name), Passing::On, "{name}");
        }
    }
}
