//! A service's description of itself: `/openapi.json`, the self-hosted `/docs` page and its two
//! assets (the script and stylesheet are shared, [`infergate_headers::DOCS_JS`]). The page works
//! offline under [`infergate_headers::CSP_DOCS`], which the edge applies to `/docs*`.

use actix_web::HttpResponse;
use infergate_headers::{DOCS_CSS, DOCS_JS};

use crate::error::ServiceError;

/// The two documents a service serves, as app data for the handlers below.
#[derive(Clone, Copy)]
pub struct ApiDocs {
    pub openapi: &'static str,
    pub page: &'static str,
}

impl ApiDocs {
    pub const fn new(openapi: &'static str, page: &'static str) -> Self {
        Self { openapi, page }
    }
}

fn docs(req: &actix_web::HttpRequest) -> ApiDocs {
    req.app_data::<ApiDocs>().copied().unwrap_or(ApiDocs {
        openapi: "{}",
        page: "",
    })
}

/// `GET /openapi.json`.
pub async fn openapi(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(docs(&req).openapi)
}

/// `GET /docs`.
pub async fn page(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(docs(&req).page)
}

/// `GET /docs/{asset}`: the script or the stylesheet; any other name is the service's 404.
pub async fn asset<E: ServiceError>(req: actix_web::HttpRequest) -> Result<HttpResponse, E> {
    match req.path().strip_prefix("/docs/").unwrap_or_default() {
        "docs.js" => Ok(HttpResponse::Ok()
            .content_type("text/javascript; charset=utf-8")
            .body(DOCS_JS)),
        "docs.css" => Ok(HttpResponse::Ok()
            .content_type("text/css; charset=utf-8")
            .body(DOCS_CSS)),
        _ => Err(E::not_found()),
    }
}

/// The default service: the service's JSON 404.
pub async fn not_found<E: ServiceError>() -> Result<HttpResponse, E> {
    Err(E::not_found())
}
