//! Forward or serve: the one `match` from a route's [`Serve`] (the route table's
//! [`infergate_policy::RouteTable::gateway`]) to the handler that answers it. The gateway
//! registers no actix routes: the table is the only list of routes, so a path exists exactly
//! when it is in the table, and no regex runs per request.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use infergate_policy::Serve;
use infergate_service::docs;

use crate::error::GatewayError;
use crate::handlers;
use crate::pipeline::RequestCtx;
use crate::proxy;
use crate::state::AppState;

/// The app's only service. The guard has refused unmatched paths and methods already; a
/// request reaching here without a found route is answered 404 all the same.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    pool: web::Data<crate::upstream::Pool>,
) -> Result<HttpResponse, GatewayError> {
    let serve = req
        .extensions()
        .get::<RequestCtx>()
        .and_then(|ctx| ctx.route.filter(|_| ctx.method_allowed))
        .map(|i| state.routes.routes()[i].serve);
    Ok(match serve.ok_or(GatewayError::NotFound)? {
        Serve::Health => handlers::health().await,
        Serve::HealthDetailed => handlers::health_detailed(state, pool).await,
        Serve::Ready => handlers::ready(state).await,
        Serve::Protected => handlers::protected(req, state).await,
        Serve::ApiTest => handlers::api_test(payload, req, state).await?,
        Serve::ApiStatus => handlers::api_status(req, state).await,
        Serve::Metrics => handlers::metrics(state).await,
        Serve::OpenApi => docs::openapi(req).await,
        Serve::Docs => docs::page(req).await,
        Serve::DocsAsset => docs::asset::<GatewayError>(req).await?,
        Serve::Upstream => proxy::forward(req, payload, state, pool).await?,
    })
}
