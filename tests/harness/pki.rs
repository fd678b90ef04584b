//! Test certificates: a CA per test that issues server and client certificates (rcgen, ECDSA
//! P-256), written as PEM files the gateway config names.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate (PEM): what clients and the gateway trust.
    pub pem: String,
}

/// An issued certificate and its key.
pub struct Leaf {
    /// The leaf alone (PEM).
    pub cert_pem: String,
    /// Leaf then CA: what a server sends.
    pub chain_pem: String,
    pub key_pem: String,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vrata tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Ca {
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key)?.pem();
        Ok(Self { params, key, pem })
    }

    /// A server certificate for `dns_names` (the first is also the common name).
    pub fn server(&self, dns_names: &[&str]) -> anyhow::Result<Leaf> {
        self.issue(dns_names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject is `CN=<common_name>`.
    pub fn client(&self, common_name: &str) -> anyhow::Result<Leaf> {
        self.issue(&[common_name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> anyhow::Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = name(names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![usage];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert_pem = params.signed_by(&key, &issuer)?.pem();
        Ok(Leaf {
            chain_pem: format!("{cert_pem}{}", self.pem),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem)?;
        Ok(path)
    }
}

impl Leaf {
    /// Writes `dir/<stem>.pem` (the chain) and `dir/<stem>.key` the way a renewal tool should:
    /// each to a temporary file renamed over the old one, key first.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        replace(&key, &self.key_pem)?;
        replace(&cert, &self.chain_pem)?;
        Ok((cert, key))
    }
}

/// Writes `path` atomically (temporary file, then rename).
pub fn replace(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
