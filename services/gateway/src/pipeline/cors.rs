//! CORS, before any credential is asked for: a preflight is answered here, `200` with the policy's
//! headers for an allowed origin and `400 cors_origin_not_allowed` in the gateway's JSON shape for
//! any other (one answer whatever the configuration: with no origins configured a preflight would
//! otherwise reach the router's `405`); an actual request goes on, and its response is decorated
//! for an allowed origin ([`infergate_headers::CorsPolicy`]). The edge around this adds the
//! security headers, request id and access log to both.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};

use crate::error::GatewayError;
use crate::state::AppState;

pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.error_response(GatewayError::Internal("application state missing".into())));
    };
    let policy = &state.cors;
    let origin = req.headers().get(header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(origin) = &origin
    {
        if !policy.allows(origin.as_bytes()) {
            return Ok(req.error_response(GatewayError::CorsOriginNotAllowed));
        }
        let mut res = HttpResponse::Ok().finish();
        policy.preflight(
            origin,
            req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS),
            res.headers_mut(),
        );
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    policy.decorate(origin.as_ref(), res.headers_mut());
    Ok(res)
}

#[cfg(test)]
mod tests {
    use infergate_headers::CorsPolicy;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let list = CorsPolicy::new(&["https://app.example.com".to_string()], false, 600);
        assert!(list.allows(b"https://app.example.com"));
        assert!(list.allows(b"HTTPS://APP.EXAMPLE.COM"));
        assert!(!list.allows(b"https://app.example.com.evil.test"));
        assert!(!CorsPolicy::new(&[], false, 600).allows(b"https://app.example.com"));
        assert!(CorsPolicy::new(&["*".to_string()], false, 600).allows(b"https://any.test"));
    }
}
