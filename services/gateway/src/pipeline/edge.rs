//! The gateway's side of the shared edge ([`infergate_service::edge`]): accept and screen on
//! the way in; the caller's key id and the proxy's trace id for the access log on the way out.

use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::{HttpMessage, HttpRequest};
use infergate_headers::SecurityHeaders;
use infergate_service::edge::{Admission, EdgeService};
use infergate_service::metrics::HttpMetrics;

use super::{Head, RequestCtx};
use super::{accept::request_ctx, screen::pre_checks};
use crate::error::GatewayError;
use crate::state::AppState;

/// The gateway's side of the shared edge ([`infergate_service::edge`]): the request context
/// (route from the route table, client through trusted proxies), the screening of
/// [`pre_checks`], the caller's key id and the proxy's trace id for the access log.
impl EdgeService for AppState {
    type Error = GatewayError;
    /// The context, and the path check's verdict (refused by [`pre_checks`]); `None` when the
    /// `Expect: 100-continue` hook screened and decided the request already ([`crate::serve`]).
    type Ctx = (RequestCtx, Option<Result<(), crate::path::PathError>>);

    fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics.http
    }

    fn security_headers(&self) -> Option<&SecurityHeaders> {
        self.security_headers.as_ref()
    }

    fn admit(&self, req: &ServiceRequest) -> Admission<Self::Ctx> {
        // A request that announced `Expect: 100-continue` was screened and decided by the hook
        // already: its context and decision travel with it.
        let early = req.extensions_mut().remove::<RequestCtx>();
        let (ctx, path_checked) = match early {
            Some(ctx) if ctx.early.is_some() => (ctx, None),
            Some(ctx) => (ctx, Some(Ok(()))),
            None => {
                let (ctx, checked) = request_ctx(self, &Head::of(req.request()));
                (ctx, Some(checked))
            }
        };
        Admission {
            request_id: ctx.request_id.clone(),
            template: ctx.route.map(|i| self.routes.routes()[i].template.clone()),
            client: ctx.origin.client,
            ctx: (ctx, path_checked),
        }
    }

    fn screen(
        &self,
        req: &ServiceRequest,
        (ctx, path_checked): Self::Ctx,
    ) -> Result<(), GatewayError> {
        let checked = match path_checked {
            Some(path) => pre_checks(self, &Head::of(req.request()), &ctx, path),
            None => Ok(()),
        };
        req.extensions_mut().insert(ctx);
        checked
    }

    fn key_id(req: &HttpRequest) -> Option<Arc<str>> {
        req.extensions()
            .get::<RequestCtx>()
            .and_then(|c| c.auth.as_ref().map(|a| a.record.id.clone()))
    }

    fn forwarded_trace_id(req: &HttpRequest) -> Option<String> {
        req.extensions()
            .get::<RequestCtx>()
            .and_then(|c| c.forwarded_trace_id.clone())
    }

    fn observe(&self, template: &str, elapsed: std::time::Duration, req: &HttpRequest) {
        self.metrics.observe_added(template, elapsed, req);
    }
}
