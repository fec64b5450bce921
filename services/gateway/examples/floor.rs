//! The floor under the gateway's cost per request: `make bench`'s `floor` row.
//!
//! The gateway's own parts with none of its policies: the same HTTP/1 server (actix-http on
//! actix-server, one worker), the same upstream connection pool and response streaming
//! ([`infergate_gateway::upstream`]), the same copy of every header between actix's `http` 0.2
//! types and hyper's 1.x, the body read whole before it is sent (as the gateway reads a JSON body
//! to validate it), mimalloc. No key check, limits, screening, validation, security headers,
//! CORS, metrics or access log. What the gateway spends above this row is its pipeline; what this
//! row spends above nginx is the parts themselves.
//!
//! A measuring instrument, not a product: it forwards whatever it is sent to whoever listens at
//! the upstream. Usage: `floor LISTEN_ADDR UPSTREAM_URL` (e.g. `127.0.0.1:8090 http://127.0.0.1:9000`).

use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, Request, Response, StatusCode};
use actix_web::HttpResponse;
use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::BytesMut;
use futures_util::StreamExt;
use infergate_gateway::proxy::is_hop_by_hop_name;
use infergate_gateway::upstream::{Body, Pool, PoolConfig, header_pair, response_body};

#[global_allocator]
static GLOBAL: infergate_alloc::Mimalloc = infergate_alloc::Mimalloc;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Not forwarded either way: the connection's own headers (as the proxy judges them by name)
/// and the framing, which each side sets for itself.
fn hop_by_hop(name: &str) -> bool {
    is_hop_by_hop_name(name) || name == "host" || name == "content-length"
}

fn bad_gateway() -> Response<BoxBody> {
    Response::new(StatusCode::BAD_GATEWAY)
}

async fn forward(
    mut req: Request,
    pool: Pool,
    errors: prometheus::IntCounterVec,
) -> Response<BoxBody> {
    let mut body = BytesMut::new();
    let mut payload = req.take_payload();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(_) => return Response::new(StatusCode::BAD_REQUEST),
        }
    }
    let head = req.head();
    let mut target = String::with_capacity(pool.base_path().len() + 64);
    target.push_str(pool.base_path());
    target.push_str(head.uri.path_and_query().map_or("/", |p| p.as_str()));
    let (Ok(method), Ok(uri)) = (
        http::Method::from_bytes(head.method.as_str().as_bytes()),
        http::Uri::try_from(target),
    ) else {
        return Response::new(StatusCode::BAD_REQUEST);
    };
    let mut up = http::Request::new(Body::Full(Some(body.freeze())));
    *up.method_mut() = method;
    *up.uri_mut() = uri;
    let headers = up.headers_mut();
    for (name, value) in &head.headers {
        if !hop_by_hop(name.as_str())
            && let Some((n, v)) = header_pair(name, value)
        {
            headers.append(n, v);
        }
    }
    headers.insert(http::header::HOST, pool.host().clone());

    let Ok(Ok((res, lease))) = tokio::time::timeout(TIMEOUT, pool.send(up)).await else {
        return bad_gateway();
    };
    let (head, incoming) = res.into_parts();
    let Ok(status) = StatusCode::from_u16(head.status.as_u16()) else {
        return bad_gateway();
    };
    let mut out = HttpResponse::build(status);
    let mut length = None;
    for (name, value) in &head.headers {
        if name == http::header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        } else if !hop_by_hop(name.as_str())
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            )
        {
            out.append_header((n, v));
        }
    }
    let stream = response_body(incoming, lease, TIMEOUT, Arc::from("-"), errors);
    let res = match length {
        Some(len) => out.body(SizedStream::new(len, stream)),
        None => out.streaming(stream),
    };
    res.into()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: floor LISTEN_ADDR UPSTREAM_URL");
    };
    let cfg = PoolConfig::from_url(&upstream, Duration::from_secs(5), 1024)
        .map_err(|e| anyhow::anyhow!("upstream URL: {e}"))?;
    let errors = prometheus::IntCounterVec::new(
        prometheus::Opts::new("floor_upstream_errors", "upstream errors"),
        &["kind"],
    )?;
    actix_rt::System::new().block_on(async move {
        actix_server::Server::build()
            .workers(1)
            .bind("floor", listen, move || {
                // One pool per worker, built on the worker's thread, as the gateway does.
                let pool = Pool::new(cfg.clone());
                let errors = errors.clone();
                HttpService::build()
                    .finish(move |req: Request| {
                        let (pool, errors) = (pool.clone(), errors.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(forward(req, pool, errors).await)
                        }
                    })
                    .tcp()
            })?
            .run()
            .await
    })?;
    Ok(())
}
