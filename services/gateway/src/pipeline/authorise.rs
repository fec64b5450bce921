//! Authorise: may the key's role call this method on this path? The answer comes from the
//! permission table in configuration; a refusal is counted here, but answered only after the
//! limits have charged the key (see [`super::decide`]), so probing forbidden routes costs too.

use infergate_keystore::KeyRecord;
use infergate_policy::Route;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::state::AppState;

/// Whether the key may make this call. The path is the decoded one ([`RequestCtx::path`]), so
/// `%2e%2e` or `%2F` cannot dress one route up as another.
pub(crate) fn authorise(state: &AppState, record: &KeyRecord, method: &str, path: &str) -> bool {
    let allowed = state.cfg.auth.permissions.allows(record.role, method, path);
    if !allowed {
        state
            .metrics
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
    }
    allowed
}

/// The refusal for a call [`authorise`] said no to, logged with the key id (never the key).
pub(crate) fn forbidden(ctx: &RequestCtx, record: &KeyRecord, route: &Route) -> GatewayError {
    tracing::warn!(request_id = %ctx.request_id, key_id = %record.id, role = %record.role, route = %route.template, "forbidden");
    GatewayError::Forbidden {
        role: record.role.as_str(),
    }
}
