//! The gateway's route table: which paths exist, which methods they accept, which are public and
//! which are proxied. The table is the single source of route *templates*, the bounded names used as
//! metric labels and rate-limit scopes, so a client sending random paths cannot grow either.

use std::sync::Arc;

/// How a route's path is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The path must equal this string.
    Exact(String),
    /// The path must start with this string (written `/v1/*` in configuration, stored as `/v1/`).
    Prefix(String),
}

impl PathPattern {
    /// Parses `/models` (exact) or `/v1/*` (prefix).
    pub fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_string()),
            None => PathPattern::Exact(s.to_string()),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Whether the gateway answers a route itself or forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Local,
    Proxied,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The bounded name used in metrics, logs and rate-limit scopes (`/v1/*` for every `/v1/...` path).
    pub template: Arc<str>,
    pub pattern: PathPattern,
    /// Upper-case methods; empty means any method.
    pub methods: Vec<&'static str>,
    /// Public routes need no credential.
    pub public: bool,
    pub kind: RouteKind,
}

impl Route {
    fn new(template: &str, methods: &[&'static str], public: bool, kind: RouteKind) -> Self {
        Self {
            template: Arc::from(template),
            pattern: PathPattern::parse(template),
            methods: methods.to_vec(),
            public,
            kind,
        }
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.contains(&method)
    }
}

#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// The path exists but not with this method; carries the route for an `Allow` header.
    MethodNotAllowed(&'a Route),
    NotFound,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The gateway's routes.
    pub fn gateway() -> Self {
        use RouteKind::{Local, Proxied};
        let routes = vec![
            Route::new("/health", &["GET", "HEAD"], true, Local),
            Route::new("/health/detailed", &["GET"], false, Local),
            Route::new("/health/ready", &["GET", "HEAD"], true, Local),
            Route::new("/protected", &["GET"], false, Local),
            Route::new("/api/test", &["POST"], false, Local),
            Route::new("/api/status", &["GET"], false, Local),
            Route::new("/metrics", &["GET"], false, Local),
            Route::new("/openapi.json", &["GET"], true, Local),
            Route::new("/docs", &["GET", "HEAD"], true, Local),
            Route::new("/docs/*", &["GET", "HEAD"], true, Local),
            Route::new("/models", &["GET"], false, Proxied),
            Route::new("/models/load", &["POST"], false, Proxied),
            Route::new("/inference", &["POST"], false, Proxied),
            Route::new("/inference/batch", &["POST"], false, Proxied),
            Route::new("/v1/*", &["GET", "POST", "DELETE"], false, Proxied),
        ];
        Self { routes }
    }

    /// Marks additional templates public (configuration), returning the unknown ones.
    pub fn set_public(&mut self, templates: &[String]) -> Vec<String> {
        let mut unknown = Vec::new();
        for t in templates {
            match self.routes.iter_mut().find(|r| &*r.template == t.as_str()) {
                Some(r) => r.public = true,
                None => unknown.push(t.clone()),
            }
        }
        unknown
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn find_template(&self, template: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.template == template)
    }

    /// Finds the route for `method` and `path`. Exact routes win over prefix routes.
    pub fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let mut candidate: Option<&Route> = None;
        for route in &self.routes {
            if !route.pattern.matches(path) {
                continue;
            }
            if route.allows_method(method) {
                return RouteMatch::Found(route);
            }
            candidate.get_or_insert(route);
        }
        match candidate {
            Some(route) => RouteMatch::MethodNotAllowed(route),
            None => RouteMatch::NotFound,
        }
    }
}

/// The methods of the OpenAI-compatible paths the gateway documents: another method on one of
/// them is `405` with this `Allow`, as for the gateway's own routes, instead of being proxied.
pub fn v1_methods(path: &str) -> Option<&'static [&'static str]> {
    match path {
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" => Some(&["POST"]),
        "/v1/models" => Some(&["GET"]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_method_matching() {
        let t = RouteTable::gateway();
        assert!(
            matches!(t.lookup("GET", "/models"), RouteMatch::Found(r) if &*r.template == "/models")
        );
        assert!(matches!(
            t.lookup("POST", "/models"),
            RouteMatch::MethodNotAllowed(_)
        ));
        assert!(matches!(
            t.lookup("POST", "/v1/chat/completions"),
            RouteMatch::Found(r) if &*r.template == "/v1/*"
        ));
        assert!(matches!(t.lookup("GET", "/v1"), RouteMatch::NotFound));
        assert!(matches!(t.lookup("GET", "/nope"), RouteMatch::NotFound));
        assert!(matches!(t.lookup("GET", "/health"), RouteMatch::Found(r) if r.public));
    }
}
