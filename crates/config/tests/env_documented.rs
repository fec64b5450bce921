//! Every environment variable the tables read is documented, with the YAML path it overrides.

use infergate_config::{admin, gateway, keys};

fn rows() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut rows = Vec::new();
    rows.extend(gateway::ENV.iter().map(|v| ("gateway", v.name, v.path)));
    rows.extend(admin::ENV.iter().map(|v| ("key-admin", v.name, v.path)));
    rows.extend(keys::KEY_STORE_ENV.iter().map(|v| ("both", v.name, v.path)));
    rows.extend(keys::JWT_ENV.iter().map(|v| ("both", v.name, v.path)));
    rows
}

#[test]
fn every_variable_is_documented_in_configuration_md() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    let missing: Vec<_> = rows()
        .into_iter()
        .filter(|(_, name, _)| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented variables: {missing:?}");
}

#[test]
fn no_variable_is_read_twice_by_one_service() {
    for table in [
        gateway::ENV.iter().map(|v| v.name).collect::<Vec<_>>(),
        admin::ENV.iter().map(|v| v.name).collect(),
    ] {
        let mut names = table.clone();
        names.extend(keys::KEY_STORE_ENV.iter().map(|v| v.name));
        names.extend(keys::JWT_ENV.iter().map(|v| v.name));
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "a variable appears twice: {names:?}"
        );
    }
}
