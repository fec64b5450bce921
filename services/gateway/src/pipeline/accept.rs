//! Accept: what every later stage reads of a request — its id, its route in the table (the
//! path decoded once), and where it came from (client, trusted chain, scheme).

use std::sync::Arc;

use infergate_policy::RouteMatch;

use super::{Head, RequestCtx};
use crate::state::AppState;

/// The request id, the client address and the route of a request: what the edge establishes for
/// every stage after it. Also returns the path check's verdict (refused by [`super::screen::pre_checks`]).
pub fn request_ctx(
    state: &AppState,
    req: &Head<'_>,
) -> (RequestCtx, Result<(), crate::path::PathError>) {
    let request_id = infergate_service::edge::request_id(req.headers);
    let raw_path = req.path();
    let (path_checked, decoded_path) = match crate::path::decode_path(raw_path) {
        Ok(std::borrow::Cow::Borrowed(_)) => (Ok(()), None),
        Ok(std::borrow::Cow::Owned(p)) => (Ok(()), Some(Arc::<str>::from(p))),
        Err(e) => (Err(e), None),
    };
    let lookup_path = decoded_path.as_deref().unwrap_or(raw_path);
    let position = |r: &infergate_policy::Route| {
        state
            .routes
            .routes()
            .iter()
            .position(|x| std::ptr::eq(x, r))
    };
    let (route, method_allowed) = match state.routes.lookup(req.method.as_str(), lookup_path) {
        RouteMatch::Found(r) => (position(r), true),
        RouteMatch::MethodNotAllowed(r) => (position(r), false),
        RouteMatch::NotFound => (None, false),
    };
    let origin = crate::client_ip::Origin::of(state, req.secure, req.peer, req.headers);
    let ctx = RequestCtx {
        request_id,
        origin,
        route,
        method_allowed,
        decoded_path,
        auth: None,
        early: None,
        deferred: None,
        forwarded_trace_id: None,
        upstream_time: None,
    };
    (ctx, path_checked)
}
