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

/// What answers a route: one of the gateway's own handlers, or the upstream. The gateway
/// dispatches on this (one `match`, no second router), so a route exists exactly when it is in
/// the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    Health,
    HealthDetailed,
    Ready,
    Protected,
    ApiTest,
    ApiStatus,
    Metrics,
    OpenApi,
    Docs,
    DocsAsset,
    Upstream,
}

/// The schema a route's JSON body is checked against before it is served or forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Any well-formed JSON (the other `/v1/*` paths, whose bodies the upstream defines).
    Any,
    Inference,
    InferenceBatch,
    ModelsLoad,
    ApiTest,
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Schema {
    /// The name of a route whose calls spend model tokens (token limits reserve and meter them),
    /// for metrics labels; `None` for every other route.
    pub fn metered(self) -> Option<&'static str> {
        match self {
            Schema::ChatCompletions => Some("chat_completions"),
            Schema::Completions => Some("completions"),
            Schema::Responses => Some("responses"),
            Schema::Embeddings => Some("embeddings"),
            Schema::Inference => Some("inference"),
            Schema::InferenceBatch => Some("inference_batch"),
            Schema::Any | Schema::ModelsLoad | Schema::ApiTest => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The bounded name used in metrics, logs, body limits and rate-limit scopes (`/v1/*` for
    /// every `/v1/...` path, the documented OpenAI paths included).
    pub template: Arc<str>,
    pub pattern: PathPattern,
    /// Upper-case methods; also the `Allow` header of a 405.
    pub methods: &'static [&'static str],
    /// Public routes need no credential.
    pub public: bool,
    pub serve: Serve,
    pub schema: Schema,
}

impl Route {
    fn new(
        template: &'static str,
        path: &'static str,
        methods: &'static [&'static str],
        public: bool,
        serve: Serve,
        schema: Schema,
    ) -> Self {
        Self {
            template: Arc::from(template),
            pattern: PathPattern::parse(path),
            methods,
            public,
            serve,
            schema,
        }
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.contains(&method)
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

const READ: &[&str] = &["GET", "HEAD"];
const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];

impl RouteTable {
    /// The gateway's routes: the one list dispatch, public access, body schemas, body limits,
    /// metric labels and endpoint limits are read from. The first route whose path matches
    /// decides (exact paths come before the prefixes they fall under), so a documented OpenAI
    /// path called with another method is a `405`, not proxied as the rest of `/v1/*` would be.
    pub fn gateway() -> Self {
        use Schema::{Any, Inference, InferenceBatch, ModelsLoad};
        use Serve::*;
        let own = |path: &'static str, methods, public, serve| {
            Route::new(path, path, methods, public, serve, Any)
        };
        let up = |path: &'static str, methods, schema| {
            Route::new(path, path, methods, false, Upstream, schema)
        };
        let v1 = |path: &'static str, methods, schema| {
            Route::new("/v1/*", path, methods, false, Upstream, schema)
        };
        let routes = vec![
            own("/health", READ, true, Health),
            own("/health/detailed", GET, false, HealthDetailed),
            own("/health/ready", READ, true, Ready),
            own("/protected", GET, false, Protected),
            Route::new(
                "/api/test",
                "/api/test",
                POST,
                false,
                ApiTest,
                Schema::ApiTest,
            ),
            own("/api/status", GET, false, ApiStatus),
            own("/metrics", GET, false, Metrics),
            own("/openapi.json", GET, true, OpenApi),
            own("/docs", READ, true, Docs),
            own("/docs/*", READ, true, DocsAsset),
            up("/models", GET, Any),
            up("/models/load", POST, ModelsLoad),
            up("/inference", POST, Inference),
            up("/inference/batch", POST, InferenceBatch),
            v1("/v1/chat/completions", POST, Schema::ChatCompletions),
            v1("/v1/completions", POST, Schema::Completions),
            v1("/v1/embeddings", POST, Schema::Embeddings),
            v1("/v1/responses", POST, Schema::Responses),
            v1("/v1/models", GET, Any),
            v1("/v1/*", &["GET", "POST", "DELETE"], Any),
        ];
        Self { routes }
    }

    /// Marks additional templates public (configuration), returning the unknown ones.
    pub fn set_public(&mut self, templates: &[String]) -> Vec<String> {
        let mut unknown = Vec::new();
        for t in templates {
            let mut found = false;
            for r in self
                .routes
                .iter_mut()
                .filter(|r| &*r.template == t.as_str())
            {
                r.public = true;
                found = true;
            }
            if !found {
                unknown.push(t.clone());
            }
        }
        unknown
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The distinct templates, in table order (for messages listing what is accepted).
    pub fn templates(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.routes {
            if !out.contains(&&*r.template) {
                out.push(&r.template);
            }
        }
        out
    }

    /// A route of this template (the shared `Arc` label every route of it carries).
    pub fn find_template(&self, template: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.template == template)
    }

    /// Finds the route for `method` and `path`: the first route whose path matches decides.
    pub fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_> {
        match self.routes.iter().find(|r| r.pattern.matches(path)) {
            Some(route) if route.allows_method(method) => RouteMatch::Found(route),
            Some(route) => RouteMatch::MethodNotAllowed(route),
            None => RouteMatch::NotFound,
        }
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
        assert!(matches!(
            t.lookup("GET", "/v1/chat/completions"),
            RouteMatch::MethodNotAllowed(r) if r.methods == ["POST"] && &*r.template == "/v1/*"
        ));
        assert!(matches!(
            t.lookup("DELETE", "/v1/models/m"),
            RouteMatch::Found(r) if r.serve == Serve::Upstream && r.schema == Schema::Any
        ));
        assert!(matches!(
            t.lookup("PUT", "/v1/files"),
            RouteMatch::MethodNotAllowed(_)
        ));
    }

    #[test]
    fn every_route_of_a_template_turns_public_together() {
        let mut t = RouteTable::gateway();
        assert_eq!(
            t.set_public(&["/v1/*".into(), "/nope".into()]),
            vec!["/nope"]
        );
        assert!(
            t.routes()
                .iter()
                .filter(|r| &*r.template == "/v1/*")
                .all(|r| r.public)
        );
        assert_eq!(t.templates().iter().filter(|t| **t == "/v1/*").count(), 1);
    }
}
