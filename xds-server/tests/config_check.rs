//! `vrata_xds::config` through its public API, on files: what `xds-server check` prints.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use vrata_xds::config::{self, Diagnostic};
use vrata_xds::model::{Action, Endpoints, Name};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(rel)
}

/// `FILE_NAME:LINE:COL: message`, without the directory (which depends on the checkout).
fn short(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            let name = d.file.file_name().map(|n| n.to_string_lossy().into_owned());
            format!(
                "{}:{}:{}: {}",
                name.unwrap_or_default(),
                d.line,
                d.col,
                d.message
            )
        })
        .collect()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_file_with_three_mistakes_gives_three_lines() {
    let path = fixture("three_mistakes.yaml");
    let diagnostics = config::load_with_env(&path, &no_env).expect_err("three mistakes");
    assert_eq!(
        short(&diagnostics),
        [
            "three_mistakes.yaml:5:5: unknown key `acess_log`; did you mean `access_log`?",
            "three_mistakes.yaml:9:22: invalid duration `5 seconds`: write an integer and a unit (ms, s, m, h, d), e.g. 250ms, 30s, 5m or 1m30s",
            "three_mistakes.yaml:13:15: unknown upstream `ordres`; did you mean `orders`?",
        ]
    );
    // What `check` prints: the path as given, then line and column.
    assert_eq!(
        diagnostics[0].to_string(),
        format!(
            "{}:5:5: unknown key `acess_log`; did you mean `access_log`?",
            path.display()
        )
    );
}

#[test]
fn a_name_defined_in_two_files_names_both_places() {
    let dir = fixture("merge");
    let diagnostics = config::load_with_env(&dir, &no_env).expect_err("duplicate route");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d.file, dir.join("20-routes.yaml"));
    assert_eq!((d.line, d.col), (8, 11));
    assert_eq!(
        d.message,
        format!(
            "route `orders` is already defined at {}:6:11",
            dir.join("10-upstreams.yaml").display()
        )
    );
}

#[test]
fn a_directory_is_merged_in_file_name_order_with_env() {
    let dir = fixture("valid");
    let env: HashMap<&str, &str> = [("ORDERS_IP", "10.0.0.11"), ("PUBLIC_PORT", "80")].into();
    let loaded = config::load_with_env(&dir, &|name| env.get(name).map(|v| (*v).to_owned()))
        .unwrap_or_else(|e| panic!("{}", short(&e).join("\n")));
    assert_eq!(
        loaded.files,
        ["10-listeners.yaml", "20-upstreams.yaml", "30-routes.yaml"].map(|f| dir.join(f))
    );
    let gw = &loaded.gateway;
    assert_eq!(gw.listeners[0].address.to_string(), "0.0.0.0:80");
    let orders = &gw.upstreams[&Name::new("orders").expect("name")];
    let Endpoints::Static(endpoints) = &orders.endpoints else {
        panic!("static endpoints")
    };
    assert_eq!(endpoints[0].address.to_string(), "10.0.0.11:8080");
    let names: Vec<&str> = gw.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["orders-read", "order-by-id", "users", "old-site", "healthz"]
    );
    assert!(matches!(gw.routes[4].action, Action::Respond(_)));
    assert_eq!(
        loaded.document.to_json()["upstreams"]["orders"]["endpoints"][0],
        "10.0.0.11:8080"
    );
    assert_eq!(
        loaded.document.to_json()["services"]["ext_authz"],
        "127.0.0.1:18001"
    );

    // Without the variable that has no default: one diagnostic, where it is written.
    let diagnostics = config::load_with_env(&dir, &no_env).expect_err("ORDERS_IP unset");
    assert_eq!(
        short(&diagnostics),
        [
            "20-upstreams.yaml:3:18: environment variable `ORDERS_IP` is not set (write `${ORDERS_IP:-default}` to give a default)"
        ]
    );
}

#[test]
fn json_schema_is_generated() {
    let schema = config::json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    for key in ["listeners", "upstreams", "routes", "services"] {
        assert!(schema["properties"].get(key).is_some(), "{key}");
    }
}

/// Every example of the repository loads (examples use `${VAR:-default}` for what they need).
#[test]
fn every_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no examples/ directory: nothing to check");
            return;
        }
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut examples: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    if examples.is_empty() {
        eprintln!("no examples/*.yaml: nothing to check");
        return;
    }
    for example in examples {
        if let Err(diagnostics) = config::load_with_env(&example, &no_env) {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("{} does not load:\n{}", example.display(), lines.join("\n"));
        }
    }
}
