//! Golden tests: hand-built gateways rendered with `render_yaml` against
//! `tests/golden/<name>.yaml` (`VRATA_BLESS=1 cargo test -p vrata-xds --test translate_golden`
//! rewrites them), and the same resources accepted by the real Envoy (`--mode validate`).

mod golden;

use vrata_xds::translate::{render_yaml, translate};

#[test]
fn golden_files_match() {
    for (name, gateway) in golden::models::all() {
        golden::check_golden(name, &translate(&gateway));
    }
}

#[test]
fn envoy_accepts_every_golden_model() {
    for (name, gateway) in golden::models::all() {
        golden::envoy_validate(name, &translate(&gateway));
    }
    golden::envoy_validate(
        "large_respond_body",
        &translate(&golden::models::large_respond_body()),
    );
}

/// The YAML says exactly what the proto3 JSON says (quoting, escapes, numbers).
#[test]
fn yaml_reads_back_as_the_json() {
    use saphyr::{LoadableYamlNode, Yaml};
    fn to_json(node: &Yaml<'_>) -> serde_json::Value {
        match node {
            Yaml::Mapping(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                    .collect(),
            ),
            Yaml::Sequence(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
            other => {
                if let Some(b) = other.as_bool() {
                    serde_json::Value::Bool(b)
                } else if let Some(i) = other.as_integer() {
                    serde_json::Value::from(i)
                } else if let Some(f) = other.as_floating_point() {
                    serde_json::Value::from(f)
                } else if let Some(s) = other.as_str() {
                    serde_json::Value::String(s.to_owned())
                } else {
                    panic!("unexpected YAML node {other:?}")
                }
            }
        }
    }
    /// JSON numbers compare by value (405 and 405.0 are the same double to Envoy).
    fn normalize(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) => serde_json::Value::from(n.as_f64().expect("number")),
            serde_json::Value::Array(a) => a.into_iter().map(normalize).collect(),
            serde_json::Value::Object(o) => {
                serde_json::Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect())
            }
            other => other,
        }
    }
    for (name, gateway) in golden::models::all() {
        let resources = translate(&gateway);
        let yaml = render_yaml(&resources).expect("renders");
        let docs = Yaml::load_from_str(&yaml).expect("valid YAML");
        let read_back = to_json(&docs[0]);
        let list = |items: Vec<serde_json::Value>| serde_json::Value::Array(items);
        let expected = serde_json::json!({
            "clusters": list(resources.clusters.iter().map(|m| vrata_proto::to_json(m).expect("json")).collect()),
            "endpoints": list(resources.endpoints.iter().map(|m| vrata_proto::to_json(m).expect("json")).collect()),
            "secrets": list(resources.secrets.iter().map(|m| vrata_proto::to_json(m).expect("json")).collect()),
            "listeners": list(resources.listeners.iter().map(|m| vrata_proto::to_json(m).expect("json")).collect()),
            "route_configs": list(resources.route_configs.iter().map(|m| vrata_proto::to_json(m).expect("json")).collect()),
            "ratelimit_service": vrata_proto::to_json(&resources.rate_limit_config).expect("json"),
            "ext_authz": vrata_proto::to_json(&resources.authz_policy).expect("json"),
            "aggregator": vrata_proto::to_json(&resources.aggregator_config).expect("json"),
            "response_cache": vrata_proto::to_json(&resources.cache_config).expect("json"),
        });
        assert_eq!(normalize(read_back), normalize(expected), "{name}");
    }
}

/// Same model, same bytes: packed `Any`s included (Envoy drains a listener whose HCM bytes
/// change, and prost writes maps in random order).
#[test]
fn translation_is_deterministic() {
    for (name, gateway) in golden::models::all() {
        let first = translate(&gateway);
        let second = translate(&gateway.clone());
        assert_eq!(first, second, "{name}");
        assert_eq!(
            render_yaml(&first).expect("renders"),
            render_yaml(&second).expect("renders"),
            "{name}"
        );
    }
}

#[test]
fn every_referenced_cluster_exists() {
    for (name, gateway) in golden::models::all() {
        let resources = translate(&gateway);
        for cluster in resources.referenced_clusters() {
            assert!(
                resources.clusters.iter().any(|c| c.name == cluster),
                "{name}: a route sends to missing cluster {cluster}"
            );
        }
    }
}

/// Every runnable example: loaded from its file, rendered against
/// `tests/golden/example-<name>.yaml`, and accepted by the real Envoy.
#[test]
fn every_example_renders_to_its_golden_file_and_envoy_accepts_it() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", examples.display());
    for file in files {
        let loaded = vrata_xds::config::load(&file).unwrap_or_else(|diags| {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("{} does not load:\n{}", file.display(), lines.join("\n"))
        });
        let name = format!(
            "example-{}",
            file.file_stem()
                .and_then(|s| s.to_str())
                .expect("a UTF-8 name")
        );
        let resources = translate(&loaded.gateway);
        golden::check_golden(&name, &resources);
        golden::envoy_validate(&name, &resources);
    }
}
