//! The container deployment (issue 6), checked without a container engine: `docker-compose
//! config -q` accepts docker-compose.yml; every file it mounts and every build context and
//! Dockerfile target exists; Envoy's image is the version the tests run; only the gateway port
//! is published; every service has a health check; the gateway config it mounts is valid; and
//! the Keycloak realm it imports has the roles, scopes, audience and clients `examples/` use.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use saphyr::{LoadableYamlNode, Yaml};
use serde_json::Value;
use vrata_e2e::paths::{envoy_bin, repo_root};

fn to_json(node: &Yaml<'_>) -> Value {
    match node {
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = k
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| k.as_integer().map(|i| i.to_string()))
                        .unwrap_or_default();
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        other => {
            if let Some(b) = other.as_bool() {
                Value::Bool(b)
            } else if let Some(i) = other.as_integer() {
                Value::from(i)
            } else if let Some(f) = other.as_floating_point() {
                Value::from(f)
            } else if let Some(s) = other.as_str() {
                Value::String(s.to_owned())
            } else {
                Value::Null
            }
        }
    }
}

fn yaml_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)?;
    let docs =
        Yaml::load_from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(docs.first().map(to_json).unwrap_or(Value::Null))
}

fn compose() -> anyhow::Result<Value> {
    yaml_file(&repo_root().join("docker-compose.yml"))
}

fn services(c: &Value) -> Vec<(String, Value)> {
    c["services"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[test]
fn docker_compose_config_accepts_the_file() -> anyhow::Result<()> {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo_root())
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run docker-compose ({e}): ./scripts/test installs it")
        })?;
    assert!(
        out.status.success(),
        "docker-compose config -q:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn mounts_builds_ports_health_checks_and_the_envoy_version() -> anyhow::Result<()> {
    let root = repo_root();
    let c = compose()?;
    let all = services(&c);
    assert!(all.len() >= 7, "{all:?}");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    for (name, s) in &all {
        assert!(
            s["healthcheck"]["test"].is_array(),
            "{name} has no health check"
        );
        if let Some(build) = s.get("build") {
            let context = root.join(build["context"].as_str().unwrap_or("."));
            assert!(
                context.is_dir(),
                "{name}: build context {}",
                context.display()
            );
            let file = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(file.is_file(), "{name}: {}", file.display());
            let target = build["target"].as_str().unwrap_or_default();
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "{name}: no target {target} in the Dockerfile"
            );
        } else {
            assert!(s["image"].is_string(), "{name}: neither build nor image");
        }
        for v in s["volumes"].as_array().cloned().unwrap_or_default() {
            let spec = v.as_str().unwrap_or_default();
            let host = spec.split(':').next().unwrap_or_default();
            assert!(
                host.starts_with("./"),
                "{name}: {spec} is not a repository file"
            );
            assert!(
                root.join(host).exists(),
                "{name} mounts {host}, which does not exist"
            );
        }
        if name != "envoy" {
            assert!(s.get("ports").is_none(), "{name} publishes a port");
        }
        for dep in s["depends_on"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                all.iter().any(|(n, _)| *n == dep),
                "{name} depends on unknown {dep}"
            );
            assert_eq!(
                s["depends_on"][&dep]["condition"], "service_healthy",
                "{name} starts before {dep} is healthy"
            );
        }
    }
    let envoy = &c["services"]["envoy"];
    assert_eq!(envoy["ports"], serde_json::json!(["8080:8080"]));
    // The image runs the Envoy the tests run.
    let out = Command::new(envoy_bin()).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split('/')
        .find(|p| p.split('.').count() == 3 && p.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| anyhow::anyhow!("no version in {text}"))?;
    assert_eq!(envoy["image"], format!("envoyproxy/envoy:v{version}"));
    // The published port is the gateway listener's.
    let gw = yaml_file(&root.join("examples/compose/gateway.yaml"))?;
    assert_eq!(gw["listeners"][0]["address"], "0.0.0.0:8080");
    Ok(())
}

#[test]
fn the_mounted_gateway_config_is_valid() -> anyhow::Result<()> {
    let out = Command::new(vrata_e2e::xds::binary("xds-server"))
        .args(["check", "--config"])
        .arg(repo_root().join("examples/compose"))
        .output()?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Roles, scopes and audiences the gateway configs of `examples/` require.
fn required(
    dir: &Path,
    roles: &mut BTreeSet<String>,
    scopes: &mut BTreeSet<String>,
    audiences: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let gw = yaml_file(&path)?;
        for route in gw["routes"].as_array().cloned().unwrap_or_default() {
            for (field, set) in [("roles", &mut *roles), ("scopes", &mut *scopes)] {
                for kind in ["any_of", "all_of"] {
                    for v in route["auth"][field][kind]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        set.insert(v.as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
        for (_, p) in gw["auth"]["providers"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            for a in p["audiences"].as_array().cloned().unwrap_or_default() {
                audiences.insert(a.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(())
}

#[test]
fn the_realm_has_what_the_examples_use() -> anyhow::Result<()> {
    let root = repo_root();
    let realm: Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("examples/keycloak/realm-demo.json"),
    )?)?;
    assert_eq!(realm["realm"], "demo");
    let (mut roles, mut scopes, mut audiences) = Default::default();
    required(
        &root.join("examples"),
        &mut roles,
        &mut scopes,
        &mut audiences,
    )?;
    required(
        &root.join("examples/compose"),
        &mut roles,
        &mut scopes,
        &mut audiences,
    )?;
    assert!(
        roles.contains("orders:read") && scopes.contains("orders.read"),
        "{roles:?} {scopes:?}"
    );

    let names = |v: &Value, key: &str| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x[key].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let realm_roles = names(&realm["roles"]["realm"], "name");
    assert!(
        roles.is_subset(&realm_roles),
        "roles {roles:?} not all in {realm_roles:?}"
    );
    let client_scopes = names(&realm["clientScopes"], "name");
    assert!(
        scopes.is_subset(&client_scopes),
        "scopes {scopes:?} not all in {client_scopes:?}"
    );
    let clients = names(&realm["clients"], "clientId");
    // The audience is a client (whose roles are `resource_access.<audience>.roles`) and every
    // token gets it through a default client scope with an audience mapper.
    let default_scopes: BTreeSet<String> = realm["defaultDefaultClientScopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for aud in &audiences {
        assert!(clients.contains(aud), "no client {aud}");
        let mapped = realm["clientScopes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                default_scopes.contains(s["name"].as_str().unwrap_or_default())
                    && s["protocolMappers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| {
                            m["protocolMapper"] == "oidc-audience-mapper"
                                && m["config"]["included.client.audience"] == aud.as_str()
                        })
            });
        assert!(mapped, "no default audience mapper for {aud}");
    }
    // The machine clients of the tests' provider exist with the same secrets and realm roles.
    for ((id, secret), role) in [
        (vrata_e2e::oidc::ORDERS_CLIENT, Some("orders:read")),
        (vrata_e2e::oidc::NO_ROLE_CLIENT, None),
    ] {
        let client = realm["clients"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["clientId"] == id))
            .ok_or_else(|| anyhow::anyhow!("no client {id}"))?;
        assert_eq!(client["secret"], secret);
        assert_eq!(client["serviceAccountsEnabled"], true);
        let account = realm["users"]
            .as_array()
            .and_then(|a| a.iter().find(|u| u["serviceAccountClientId"] == id))
            .ok_or_else(|| anyhow::anyhow!("no service account for {id}"))?;
        let has: Vec<&str> = account["realmRoles"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(has, role.into_iter().collect::<Vec<_>>(), "{id}");
    }
    // Every role given to a user or client exists.
    for user in realm["users"].as_array().cloned().unwrap_or_default() {
        for r in user["realmRoles"].as_array().cloned().unwrap_or_default() {
            assert!(
                realm_roles.contains(r.as_str().unwrap_or_default()),
                "{r} of {}",
                user["username"]
            );
        }
    }
    Ok(())
}
