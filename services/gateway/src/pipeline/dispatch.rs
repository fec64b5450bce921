//! Forward or serve: the one `match` from a route's [`Serve`] (the route table's
//! [`infergate_policy::RouteTable::gateway`]) to the handler that answers it. The gateway
//! registers no actix routes: the table is the only list of routes, so a path exists exactly
//! when it is in the table, and no regex runs per request.

use actix_web::dev::Payload;
use actix_web::{HttpRequest, HttpResponse, web};
use infergate_policy::Serve;
use infergate_service::docs;

use crate::error::GatewayError;
use crate::handlers;
use crate::pipeline::RequestCtx;
use crate::proxy;
use crate::state::AppState;

/// Serves a request [`super::decide`] admitted. A request reaching here without a found route
/// (it was refused before) is answered 404 all the same.
pub async fn dispatch(
    req: &HttpRequest,
    payload: Payload,
    state: &web::Data<AppState>,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let serve = ctx
        .route
        .filter(|_| ctx.method_allowed)
        .map(|i| state.routes.routes()[i].serve);
    Ok(match serve.ok_or(GatewayError::NotFound)? {
        Serve::Health => handlers::health().await,
        // Boxed, as the proxy's below: rare routes with large futures, which would otherwise be
        // moved with every request's (docs/performance.md, "Futures moved per request").
        Serve::HealthDetailed => Box::pin(handlers::health_detailed(state, pool(req)?)).await,
        Serve::Ready => handlers::ready(state),
        Serve::Protected => handlers::protected(req, state, ctx),
        Serve::ApiTest => Box::pin(handlers::api_test(payload, req, state)).await?,
        Serve::ApiStatus => handlers::api_status(state, ctx),
        Serve::Metrics => handlers::metrics(state.clone()).await,
        Serve::OpenApi => docs::openapi(req.clone()).await,
        Serve::Docs => docs::page(req.clone()).await,
        Serve::DocsAsset => docs::asset::<GatewayError>(req.clone()).await?,
        // Boxed: the proxy's future is the largest of all.
        Serve::Upstream => Box::pin(proxy::forward(req, payload, state, pool(req)?, ctx)).await?,
    })
}

/// This worker's connection pool to the upstream (the app's data, one per worker).
fn pool(req: &HttpRequest) -> Result<&crate::upstream::Pool, GatewayError> {
    req.app_data::<web::Data<crate::upstream::Pool>>()
        .map(|p| p.get_ref())
        .ok_or_else(|| GatewayError::Internal("upstream pool missing".into()))
}
