//! Screen: the checks that need no identity, in order — connection caps, trusted host, HTTPS
//! only, body size by `Content-Length`, path, upgrades, attack signatures in path, query and
//! headers.

use actix_web::http::header;

use super::{Head, RequestCtx};
use crate::error::GatewayError;
use crate::state::AppState;

/// Checks that need no identity. Order matters: host before anything else, signatures last.
pub fn pre_checks(
    state: &AppState,
    req: &Head<'_>,
    ctx: &RequestCtx,
    path: Result<(), crate::path::PathError>,
) -> Result<(), GatewayError> {
    if let Some(over) = req.over {
        return Err(GatewayError::TooManyConnections {
            per_ip: over == crate::connections::Over::PerIp,
        });
    }
    // One Host (RFC 9112 §3.2: more than one is a 400), and with an absolute-form target its
    // authority is the host that counts (§3.2.2), so both must be trusted.
    let mut hosts = req.headers.get_all(header::HOST);
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::UntrustedHost);
    }
    let host_header = first.map(|h| h.to_str().map_err(|_| GatewayError::UntrustedHost));
    let host = match (host_header.transpose()?, req.uri.authority()) {
        (Some(h), Some(a)) => {
            if !state.hosts.allows(a.as_str()) {
                return Err(GatewayError::UntrustedHost);
            }
            h
        }
        (Some(h), None) => h,
        (None, Some(a)) => a.as_str(),
        (None, None) => "",
    };
    if !state.hosts.allows(host) {
        return Err(GatewayError::UntrustedHost);
    }
    if state.cfg.https_only && !ctx.origin.https {
        let location = state.cfg.https_redirect.then(|| {
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            format!("https://{host}{pq}")
        });
        return Err(GatewayError::HttpsRequired { location });
    }
    if let Some(len) = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        let template = ctx
            .route
            .map_or("", |i| &*state.routes.routes()[i].template);
        // An upload path's own limit (the OpenAI SDK sends uploads with a Content-Length).
        let limit = state.cfg.body_limits.limit(template, ctx.path(req.path()));
        if len > limit as u64 {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
    }
    path.map_err(|e| GatewayError::SuspiciousInput {
        location: "path",
        category: e.category(),
    })?;
    if let Some(upgrade) = req.headers.get(header::UPGRADE) {
        // h2c is an offer a server may ignore (RFC 7540 §3.2); anything else would be a tunnel.
        let h2c = upgrade
            .to_str()
            .is_ok_and(|v| v.split(',').all(|t| t.trim().eq_ignore_ascii_case("h2c")));
        if !h2c {
            return Err(GatewayError::UpgradeNotAllowed);
        }
    }
    state.scanner.scan_path(ctx.path(req.uri.path()))?;
    if let Some(q) = req.uri.query() {
        state
            .scanner
            .scan_query(q, state.credential_rules.query_param.as_deref())?;
    }
    for (name, value) in req.headers {
        // Credentials are validated by authentication (and must never be echoed); cookies are
        // opaque to the gateway.
        if name == header::AUTHORIZATION || name == header::COOKIE || *name == state.api_key_header
        {
            continue;
        }
        state.scanner.scan_header(value.as_bytes())?;
    }
    Ok(())
}
