#![no_main]
//! JSON body validation: strict (I-JSON) parsing, then every schema the route table names.
use std::sync::LazyLock;

use infergate_gateway::json::parse_strict;
use infergate_gateway::validate::check_body;
use infergate_policy::{RouteTable, Schema};
use libfuzzer_sys::fuzz_target;

/// Every body schema of the gateway's routes, read from the one route table.
static SCHEMAS: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    let mut schemas: Vec<Schema> = Vec::new();
    for route in RouteTable::gateway().routes() {
        if !schemas.contains(&route.schema) {
            schemas.push(route.schema);
        }
    }
    schemas
});

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_strict(data) {
        // Whatever strict parsing accepts, serde_json reads the same (no duplicate was hidden,
        // no string borrowed wrongly from the body).
        let plain: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(plain, v.to_value());
        for schema in SCHEMAS.iter() {
            let _ = check_body(*schema, &v);
        }
    }
});
