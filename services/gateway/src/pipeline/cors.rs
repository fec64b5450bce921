//! CORS preflights from origins that are not allowed: one answer whatever the configuration,
//! `400 cors_origin_not_allowed` in the gateway's JSON shape. Without this, a gateway with no
//! origins configured (its CORS layer left out) would answer `405` from the router, and one with
//! origins would answer actix-cors's own `400`; allowed preflights go on to actix-cors.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::error::GatewayError;
use crate::state::AppState;

/// Whether `origin` is one of the configured ones (`*` allows any).
fn allowed(origins: &[String], origin: &[u8]) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin))
}

pub async fn refuse_foreign_preflights(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let h = req.headers();
    if req.method() == Method::OPTIONS
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(origin) = h.get(header::ORIGIN)
    {
        let refused = req
            .app_data::<web::Data<AppState>>()
            .is_none_or(|st| !allowed(&st.cfg.cors.origins, origin.as_bytes()));
        if refused {
            return Ok(req.error_response(GatewayError::CorsOriginNotAllowed));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let list = vec!["https://app.example.com".to_string()];
        assert!(allowed(&list, b"https://app.example.com"));
        assert!(allowed(&list, b"HTTPS://APP.EXAMPLE.COM"));
        assert!(!allowed(&list, b"https://app.example.com.evil.test"));
        assert!(!allowed(&[], b"https://app.example.com"));
        assert!(allowed(&["*".to_string()], b"https://any.test"));
    }
}
