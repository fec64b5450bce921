//! Input validation.
//!
//! Two jobs, kept apart on purpose, one file each:
//! - [`scan`]: the [`Scanner`] looks for attack signatures (SQL injection, XSS, NUL bytes) in the
//!   *path, query string and headers* after undoing up to three layers of percent-encoding, and
//!   for traversal in the path only: a URL in a query value or a `Referer` may hold `../`, and
//!   [`crate::path`] refuses dot segments in the path itself.
//! - [`schema`]: [`check_body`] validates JSON bodies against each route's schema, naming the
//!   offending field; [`check_models`] holds the names a body asks for against a key's allowlist.
//!
//! Request *bodies* of inference routes are never pattern-filtered: prompts legitimately contain
//! code, SQL and HTML (docs/security.md explains why).

pub mod scan;
pub mod schema;

pub use scan::Scanner;
pub use schema::{check_body, check_models, parse_json, whole, whole_number};
