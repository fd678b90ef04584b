//! The gateway file format: YAML with positions, `${VAR}` expansion, directory merge,
//! validation reporting every problem as FILE:LINE:COL, conversion into `crate::model`.
//!
//! # Design
//!
//! `xds-server check` must print *every* problem with its exact position, so loading is a
//! pipeline in which no phase stops at the first problem:
//!
//! 1. `yaml`: `saphyr_parser` events become a small tree whose every node knows its position.
//!    Off-the-shelf YAML values lose positions and silently accept duplicate keys; we also
//!    reject anchors, aliases and tags. Scalars are resolved with the YAML 1.2 core schema.
//! 2. `env`: `${VAR}` / `${VAR:-default}` are expanded in string values of the tree.
//! 3. `de` + `dto`: serde DTOs decoded by our own `Deserializer` over the tree. It reports unknown
//!    keys itself (serde passes each struct's field list), type errors at the value, missing
//!    required keys at the mapping; `Spanned<T>` fields carry positions and are the recovery
//!    boundary: a bad value is reported and dropped, its siblings are still decoded. The DTOs are
//!    also the source of the JSON Schema (schemars), so schema and decoder cannot disagree.
//! 4. `convert`: the files are merged and the DTOs converted into `model::Gateway`, with the
//!    semantic checks (exclusive keys, ranges, references, templates, regexes) reported at the
//!    offending values.
//!
//! Every phase reports into one `diagnostic::Sink`, which orders the result and owns the
//! wording shared by the checks. A value already reported is never reported again downstream
//! (it is absent from the DTO, or marked in the tree), so one mistake gives one line.
//!
//! Alternatives considered: `serde_yaml` (unmaintained, first error only), `serde-saphyr`
//! (positions, but stops at the first error and knows nothing of our semantic checks), and
//! validating the JSON Schema against the document (positions of JSON pointers only, and the
//! semantic checks would still need a second pass with the spans).

mod convert;
mod de;
mod diagnostic;
mod dto;
mod duration;
mod env;
mod pki;
mod re2;
mod spanned;
mod syntax;
mod template;
mod yaml;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

pub use diagnostic::Diagnostic;

use crate::model::Gateway;
use convert::FileDto;
use de::Decoder;
use diagnostic::{FileId, Pos, Sink};
use env::Env;

/// A loaded, valid configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub gateway: Gateway,
    /// Every file read: the config files in merge order, then certificate, key and CA files
    /// (for the watcher).
    pub files: Vec<PathBuf>,
    /// Problems that do not stop the config from serving (an expired certificate).
    pub warnings: Vec<Diagnostic>,
    /// The merged, env-expanded configuration (for `GET /admin/config`).
    pub document: Document,
}

/// The files' env-expanded trees, merged into one JSON document only when asked for
/// (`GET /admin/config`): a reload does not build a view few look at, and holding it is cheap
/// to clone.
#[derive(Debug, Clone, Default)]
pub struct Document(std::sync::Arc<Vec<yaml::Node>>);

impl Document {
    /// The files merged like the configuration: lists concatenated, mappings joined.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        let mut doc = serde_json::Map::new();
        for root in self.0.iter() {
            let J::Object(map) = root.to_json() else {
                continue;
            };
            for (key, value) in map {
                match (doc.get_mut(&key), value) {
                    (Some(J::Array(have)), J::Array(more)) => have.extend(more),
                    (Some(J::Object(have)), J::Object(more)) => have.extend(more),
                    (_, value) => {
                        doc.insert(key, value);
                    }
                }
            }
        }
        J::Object(doc)
    }
}

/// Loads `path` (a YAML file, or a directory whose `*.yaml`/`*.yml` files are merged in file-name
/// order), expanding `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_with_env(path, &|name| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })
}

/// [`load`] with an explicit environment lookup.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut sink = Sink::default();
    let files = match discover(path) {
        Ok(files) => files,
        Err(message) => {
            let id = sink.add_file(path.to_path_buf());
            sink.error(Pos::file_start(id), message);
            return Err(sink.into_diagnostics());
        }
    };
    let sources: Vec<(FileId, Result<String, String>)> = files
        .iter()
        .map(|f| {
            let id = sink.add_file(f.clone());
            (id, fs::read_to_string(f).map_err(|e| e.to_string()))
        })
        .collect();
    let materials = convert::tls::Materials::new(std::time::SystemTime::now());
    let (gateway, document, warnings) = load_sources(sink, sources, env, &materials)?;
    let mut files = files;
    files.extend(materials.files());
    Ok(Loaded {
        gateway,
        files,
        warnings,
        document,
    })
}

/// The JSON Schema of the file format (draft 2020-12), generated from the DTOs.
pub fn json_schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<dto::GatewayDto>()
        .to_value()
}

/// The files to read for `path`.
fn discover(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read the configuration: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = fs::read_dir(path).map_err(|e| format!("cannot read the directory: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read the directory: {e}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden files are editors' swap and backup files, not configuration.
        let yaml = !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"));
        if yaml && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err("no *.yaml or *.yml files in this directory".to_owned());
    }
    Ok(files)
}

/// The pipeline over the files' contents (or read errors), in merge order.
fn load_sources(
    sink: Sink,
    sources: Vec<(FileId, Result<String, String>)>,
    env: Env<'_>,
    materials: &convert::tls::Materials,
) -> Result<(Gateway, Document, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut complete = true;
    let mut roots = Vec::new();
    for (id, text) in sources {
        match text {
            Err(e) => {
                sink.error(Pos::file_start(id), format!("cannot read the file: {e}"));
                complete = false;
            }
            Ok(text) => match yaml::parse(&text, id, &sink) {
                yaml::Parsed::Document(root) => roots.push(root),
                yaml::Parsed::SyntaxError => complete = false,
            },
        }
    }
    for root in roots.iter_mut().flatten() {
        env::expand(root, env, &sink);
    }
    let decoder = Decoder {
        sink: &sink,
        hint: dto::key_hint,
    };
    let files: Vec<FileDto> = roots
        .iter()
        .map(|root| FileDto {
            gateway: match root {
                None => Some(dto::GatewayDto::default()),
                Some(node) => decoder.decode(node),
            },
        })
        .collect();
    let gateway = convert::convert(&files, complete, &sink, materials);
    if sink.is_empty() {
        let document = Document(std::sync::Arc::new(roots.into_iter().flatten().collect()));
        Ok((gateway, document, sink.warnings()))
    } else {
        Err(sink.into_diagnostics())
    }
}
