//! `listeners[].tls` and `upstreams.*.tls`: certificate files read, checked and named as SDS
//! secrets.
//!
//! Paths are relative to the file that names them. Each file is read once per load, whoever
//! names it, and becomes one secret; its name comes from the file name (`cert.api` for
//! `certs/api.pem`, `ca.clients` for `clients.pem` used as a CA), so Envoy's `sds.*` stats and
//! the admin read naturally and stay the same across reloads. The files read are reported to
//! the watcher: a renewed certificate is a config change like any other.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Cx;
use crate::config::diagnostic::Pos;
use crate::config::dto::{ListenerTlsDto, TlsVersionDto, UpstreamTlsDto};
use crate::config::pki;
use crate::config::spanned::{Spanned, or};
use crate::model::{
    ClientAuth, Endpoints, ListenerTls, PrivateKey, SecretName, TlsCertificate, TlsVersion,
    TrustedCa, UpstreamTls,
};

/// Where the system's trusted CAs are found, in order (after `SSL_CERT_FILE`): Debian/Ubuntu,
/// RHEL/Fedora, Alpine/macOS.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The secret name of the system CA bundle.
const SYSTEM_CA: &str = "ca.system";

/// Files read during one load and the secret names given to them.
pub(crate) struct Materials {
    now: SystemTime,
    read: RefCell<BTreeMap<PathBuf, Result<String, String>>>,
    /// (kind, files) -> secret name; kind is `cert` or `ca`.
    names: RefCell<BTreeMap<(&'static str, Vec<PathBuf>), SecretName>>,
}

impl Materials {
    pub fn new(now: SystemTime) -> Self {
        Self {
            now,
            read: RefCell::default(),
            names: RefCell::default(),
        }
    }

    /// Every certificate, key and CA file read, for the watcher.
    pub fn files(&self) -> Vec<PathBuf> {
        self.read.borrow().keys().cloned().collect()
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        self.read
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert_with(|| std::fs::read_to_string(path).map_err(|e| e.to_string()))
            .clone()
    }

    /// A stable, unique secret name for `files` of `kind`, from the first file's name.
    fn name(&self, kind: &'static str, files: Vec<PathBuf>, stem_of: &Path) -> SecretName {
        let mut names = self.names.borrow_mut();
        if let Some(n) = names.get(&(kind, files.clone())) {
            return n.clone();
        }
        let stem: String = stem_of
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{kind}.{stem}");
        let taken = |n: &str| names.values().any(|v| v.0 == n);
        let mut name = base.clone();
        let mut i = 2;
        while taken(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        let name = SecretName(name);
        names.insert((kind, files), name.clone());
        name
    }
}

/// `field`'s path, relative to the folder of the file it is written in.
fn resolve(cx: &Cx<'_>, field: &Spanned<String>) -> Option<PathBuf> {
    let text = field.get()?;
    let path = Path::new(text);
    if path.as_os_str().is_empty() {
        cx.error(field.pos(), "a file path is required");
        return None;
    }
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        let config_file = cx.sink.path(field.pos().file);
        config_file
            .parent()
            .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
    })
}

/// Reads the file `field` names; a failure is reported at the field.
fn read(cx: &Cx<'_>, field: &Spanned<String>) -> Option<(PathBuf, String)> {
    let path = resolve(cx, field)?;
    match cx.materials.read(&path) {
        Ok(text) => Some((path, text)),
        Err(e) => {
            cx.error(
                field.pos(),
                format!("cannot read `{}`: {e}", path.display()),
            );
            None
        }
    }
}

/// A certificate chain file and its key file, checked against each other.
fn certificate(
    cx: &Cx<'_>,
    cert: &Spanned<String>,
    key: &Spanned<String>,
) -> Option<TlsCertificate> {
    let cert_file = read(cx, cert);
    let key_file = read(cx, key);
    let (cert_path, chain_pem) = cert_file?;
    let chain = match pki::read_chain(&chain_pem, cx.materials.now) {
        Ok(c) => c,
        Err(e) => {
            cx.error(cert.pos(), format!("`{}`: {e}", cert_path.display()));
            return None;
        }
    };
    for w in &chain.warnings {
        cx.sink
            .warn(cert.pos(), format!("`{}`: {w}", cert_path.display()));
    }
    let (key_path, key_pem) = key_file?;
    if let Err(e) = chain.check_key(&key_pem) {
        cx.error(key.pos(), format!("`{}`: {e}", key_path.display()));
        return None;
    }
    let secret = cx
        .materials
        .name("cert", vec![cert_path.clone(), key_path], &cert_path);
    Some(TlsCertificate {
        secret,
        chain_pem,
        key_pem: PrivateKey::new(key_pem),
        dns_names: chain.dns_names,
    })
}

/// A CA bundle file.
fn trusted_ca(cx: &Cx<'_>, field: &Spanned<String>) -> Option<TrustedCa> {
    let (path, pem) = read(cx, field)?;
    match pki::check_ca_bundle(&pem, cx.materials.now) {
        Ok(warnings) => {
            for w in warnings {
                cx.sink
                    .warn(field.pos(), format!("`{}`: {w}", path.display()));
            }
        }
        Err(e) => {
            cx.error(field.pos(), format!("`{}`: {e}", path.display()));
            return None;
        }
    }
    let secret = cx.materials.name("ca", vec![path.clone()], &path);
    Some(TrustedCa { secret, pem })
}

/// The CA bundle of the machine xds-server runs on (`SSL_CERT_FILE` first).
fn system_ca(cx: &Cx<'_>, pos: Pos) -> Option<TrustedCa> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates: Vec<PathBuf> = from_env
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
        .collect();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        cx.error(
            pos,
            format!(
                "no system CA bundle found (looked at $SSL_CERT_FILE, {}): set `ca`",
                SYSTEM_CA_FILES.join(", ")
            ),
        );
        return None;
    };
    let pem = match cx.materials.read(path) {
        Ok(pem) => pem,
        Err(e) => {
            cx.error(
                pos,
                format!("cannot read the system CA bundle `{}`: {e}", path.display()),
            );
            return None;
        }
    };
    if let Err(e) = pki::check_ca_bundle(&pem, cx.materials.now) {
        cx.error(
            pos,
            format!("the system CA bundle `{}`: {e}", path.display()),
        );
        return None;
    }
    Some(TrustedCa {
        secret: SecretName(SYSTEM_CA.to_owned()),
        pem,
    })
}

pub(crate) fn listener(cx: &Cx<'_>, dto: &Spanned<ListenerTlsDto>) -> Option<ListenerTls> {
    let t = dto.get()?;
    let list = t.certificates.get()?;
    if list.is_empty() {
        cx.error(
            t.certificates.pos(),
            "`certificates` needs at least one {cert, key} pair",
        );
        return None;
    }
    let mut certificates = Vec::new();
    let mut complete = true;
    for pair in list {
        match pair.get().and_then(|p| certificate(cx, &p.cert, &p.key)) {
            Some(c) => certificates.push(c),
            None => complete = false,
        }
    }
    let client_auth = match &t.client_auth {
        None => Some(None),
        Some(ca) => ca.get().and_then(|a| {
            Some(Some(ClientAuth {
                ca: trusted_ca(cx, &a.ca)?,
                required: or(&a.required, true),
            }))
        }),
    };
    let min_version = match or(&t.min_version, TlsVersionDto::V1_2) {
        TlsVersionDto::V1_2 => TlsVersion::V1_2,
        TlsVersionDto::V1_3 => TlsVersion::V1_3,
    };
    complete.then_some(ListenerTls {
        certificates,
        min_version,
        client_auth: client_auth?,
    })
}

pub(crate) fn upstream(
    cx: &Cx<'_>,
    dto: &Spanned<UpstreamTlsDto>,
    endpoints: Option<&Endpoints>,
) -> Option<UpstreamTls> {
    let t = dto.get()?;
    let sni = match (&t.sni, endpoints) {
        (Some(s), _) => cx.check(s, |s| {
            let ok = !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
            if ok {
                Ok(s.to_ascii_lowercase())
            } else {
                Err(format!("`sni` must be a DNS name, found {s:?}"))
            }
        }),
        (None, Some(Endpoints::Dns { host, .. })) => Some(host.to_ascii_lowercase()),
        (None, Some(Endpoints::Static(_))) => {
            cx.error(
                dto.pos(),
                "`sni` is required with IP `endpoints`: it is the name the upstream's certificate is checked against",
            );
            None
        }
        // The endpoints were reported invalid.
        (None, None) => None,
    };
    let ca = match &t.ca {
        Some(f) => trusted_ca(cx, f),
        None => system_ca(cx, dto.pos()),
    };
    let client_certificate = match (&t.cert, &t.key) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => certificate(cx, cert, key).map(Some),
        (Some(f), None) | (None, Some(f)) => {
            cx.error(f.pos(), "a client certificate needs both `cert` and `key`");
            None
        }
    };
    Some(UpstreamTls {
        sni: sni?,
        ca: ca?,
        client_certificate: client_certificate?,
    })
}
