//! Compiles the descriptors of the part of Envoy's API vrata renders, plus vrata's own
//! `.proto` files (`vrata/`), into one encoded `FileDescriptorSet`
//! (`$OUT_DIR/envoy_descriptors.bin`, embedded by `src/lib.rs`), and generates the Rust types of
//! vrata's own messages with `prost-build` from their descriptors (`$OUT_DIR/vrata.config.v1.rs`).
//!
//! The `.proto` sources are the ones the `envoy-types` crate ships in its package (`proto/`), so
//! the descriptors always describe exactly the Rust types we build resources with. Where that
//! package lives is asked from Cargo itself (`cargo metadata`, with the `CARGO` binary that runs
//! this build): it is right for crates.io, vendored, git and path sources alike, needs no network
//! (the package is already unpacked when build scripts run) and no `protoc`; `protox` is a pure-Rust
//! compiler. `VRATA_ENVOY_PROTO_DIR` overrides the lookup (a directory laid out like envoy-types'
//! `proto/`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files compiled (their imports come along). Add the file defining any new `typed_config`
/// extension vrata starts to emit, or rendering it fails with "unknown type".
const FILES: &[&str] = &[
    // Resources served over xDS.
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/service/discovery/v3/discovery.proto",
    // Static bootstraps (`envoy --mode validate`, tests).
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto",
    // Extensions referenced from `typed_config` / `typed_*` maps.
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto",
    "envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/path/match/uri_template/v3/uri_template_match.proto",
    "envoy/extensions/path/rewrite/uri_template/v3/uri_template_rewrite.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
];

/// vrata's own files, relative to this crate's root. Their package gets Rust code; every file
/// of a new package needs its module in `src/lib.rs`.
const VRATA_FILES: &[&str] = &[
    "vrata/config/v1/aggregator.proto",
    "vrata/config/v1/authz.proto",
    "vrata/config/v1/cache.proto",
    "vrata/config/v1/ratelimit.proto",
];

/// Include roots inside envoy-types' `proto/` directory.
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("vrata-proto build: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VRATA_ENVOY_PROTO_DIR");
    println!("cargo:rerun-if-changed=vrata");
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let proto_dir = match env::var_os("VRATA_ENVOY_PROTO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => envoy_types_proto_dir()?,
    };
    if !proto_dir.join("data-plane-api").is_dir() {
        return Err(format!(
            "{} has no data-plane-api/: not envoy-types' proto directory",
            proto_dir.display()
        ));
    }
    // A different envoy-types version is a different directory; Cargo.lock records the switch.
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let mut includes: Vec<PathBuf> = INCLUDES
        .iter()
        .map(|i| proto_dir.join(i))
        .filter(|p| p.is_dir())
        .collect();
    includes.push(manifest_dir.clone());
    let mut compiler = protox::Compiler::new(&includes).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_files(FILES)
        .map_err(|e| format!("compiling Envoy's protos from {}: {e}", proto_dir.display()))?;
    compiler
        .open_files(VRATA_FILES)
        .map_err(|e| format!("compiling vrata's protos: {e}"))?;
    let encoded = compiler.encode_file_descriptor_set();

    let out = out_dir.join("envoy_descriptors.bin");
    fs::write(&out, encoded).map_err(|e| format!("writing {}: {e}", out.display()))?;

    generate_vrata_code(&manifest_dir, &out_dir)
}

/// Rust types for vrata's own messages: `protox` parses (with comments, which become doc
/// comments), `prost-build` generates from the descriptors, so no `protoc` is needed.
fn generate_vrata_code(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let mut compiler = protox::Compiler::new([manifest_dir]).map_err(|e| e.to_string())?;
    compiler.include_imports(false).include_source_info(true);
    compiler
        .open_files(VRATA_FILES)
        .map_err(|e| format!("compiling vrata's protos: {e}"))?;
    let fds = compiler.file_descriptor_set();
    let mut config = prost_build::Config::new();
    config
        .out_dir(out_dir)
        // `impl prost::Name`, with the type URLs xDS uses.
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    config
        .compile_fds(fds)
        .map_err(|e| format!("generating Rust code for vrata's protos: {e}"))
}

/// `<envoy-types package root>/proto`, for the envoy-types this crate depends on.
fn envoy_types_proto_dir() -> Result<PathBuf, String> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = manifest_dir.join("Cargo.toml");

    // Offline first: every package of this build is already unpacked. Dev-only dependencies of
    // other workspace members may not be (a plain `cargo build` in a clean checkout), in which
    // case `cargo metadata` must be allowed to fetch them.
    let mut last_error = String::new();
    for offline in [true, false] {
        let mut cmd = Command::new(&cargo);
        cmd.arg("metadata")
            .arg("--format-version=1")
            .arg("--manifest-path")
            .arg(&manifest);
        if let Ok(target) = env::var("TARGET") {
            cmd.arg("--filter-platform").arg(target);
        }
        if offline {
            cmd.arg("--offline");
        }
        let output = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
        if output.status.success() {
            let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| format!("parsing cargo metadata output: {e}"))?;
            return find_envoy_types(&metadata, &manifest);
        }
        last_error = String::from_utf8_lossy(&output.stderr).into_owned();
    }
    Err(format!(
        "cargo metadata failed (set VRATA_ENVOY_PROTO_DIR to envoy-types' proto/ directory to skip it): {last_error}"
    ))
}

/// In the resolved graph, the `envoy-types` package this manifest's package depends on.
fn find_envoy_types(metadata: &serde_json::Value, manifest: &Path) -> Result<PathBuf, String> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?;
    let manifest = fs::canonicalize(manifest).map_err(|e| e.to_string())?;
    let this_id = packages
        .iter()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| fs::canonicalize(m).ok())
                .is_some_and(|m| m == manifest)
        })
        .and_then(|p| p["id"].as_str())
        .ok_or("cargo metadata: this package is missing")?;
    let dep_id = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no resolve graph")?
        .iter()
        .find(|n| n["id"].as_str() == Some(this_id))
        .and_then(|n| n["deps"].as_array())
        .and_then(|deps| {
            deps.iter()
                .find(|d| d["name"].as_str() == Some("envoy_types"))
        })
        .and_then(|d| d["pkg"].as_str())
        .ok_or("cargo metadata: envoy-types is not a dependency of vrata-proto")?;
    let envoy_manifest = packages
        .iter()
        .find(|p| p["id"].as_str() == Some(dep_id))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata: envoy-types package is missing")?;
    Path::new(envoy_manifest)
        .parent()
        .map(|root| root.join("proto"))
        .ok_or_else(|| format!("odd manifest path {envoy_manifest}"))
}
