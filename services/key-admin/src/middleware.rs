//! What the shared edge ([`infergate_service::edge`]) needs from key-admin: the route template
//! from the resource map, the peer as the client (key-admin is not behind trusted proxies), the
//! trusted-host check as its only screening, and the caller's key id for the access log.
//! Authentication is not here: handlers ask for it by taking [`crate::auth::Admin`] or
//! [`crate::auth::AnyKey`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use infergate_headers::SecurityHeaders;
use infergate_service::edge::{Admission, EdgeService, request_id};
use infergate_service::metrics::HttpMetrics;

use crate::auth::CallerId;
use crate::error::AdminError;
use crate::state::AppState;

/// Per-request facts the edge establishes for everything after it.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: Arc<str>,
}

impl EdgeService for AppState {
    type Error = AdminError;
    type Ctx = Arc<str>;

    fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics.http
    }

    fn security_headers(&self) -> Option<&SecurityHeaders> {
        self.security_headers.as_ref()
    }

    fn admit(&self, req: &ServiceRequest) -> Admission<Arc<str>> {
        let request_id = request_id(req.headers());
        Admission {
            request_id: request_id.clone(),
            // The template (never the raw path, which holds key ids), from the resource map.
            template: req.match_pattern().map(Arc::from),
            client: req
                .peer_addr()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical()),
            ctx: request_id,
        }
    }

    fn screen(&self, req: &ServiceRequest, request_id: Arc<str>) -> Result<(), AdminError> {
        req.extensions_mut().insert(RequestCtx { request_id });
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if self.hosts.allows(host) {
            Ok(())
        } else {
            Err(AdminError::UntrustedHost)
        }
    }

    fn key_id(req: &HttpRequest) -> Option<Arc<str>> {
        req.extensions().get::<CallerId>().map(|c| c.0.clone())
    }
}
