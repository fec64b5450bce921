//! CORS, before any credential is asked for: a preflight is answered here, `200` with the policy's
//! headers for an allowed origin and `400 cors_origin_not_allowed` in the gateway's JSON shape for
//! any other (one answer whatever the configuration: with no origins configured a preflight would
//! otherwise reach the router's `405`); an actual request goes on, and its response is decorated
//! for an allowed origin ([`infergate_headers::CorsPolicy`]). The edge around this adds the
//! security headers, request id and access log to both.

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use infergate_headers::CorsPolicy;

use crate::error::GatewayError;

/// The answer to a preflight (an `OPTIONS` with `Access-Control-Request-Method` and an
/// `Origin`); `None` for any other request, which goes on and is decorated by
/// [`CorsPolicy::decorate`] once answered ([`super::serve`]).
pub fn preflight(
    policy: &CorsPolicy,
    req: &HttpRequest,
    origin: Option<&HeaderValue>,
) -> Option<HttpResponse> {
    let origin = origin?;
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    if !policy.allows(origin.as_bytes()) {
        return Some(HttpResponse::from_error(GatewayError::CorsOriginNotAllowed));
    }
    let mut res = HttpResponse::Ok().finish();
    policy.preflight(
        origin,
        req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS),
        res.headers_mut(),
    );
    Some(res)
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
