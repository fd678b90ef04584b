//! Certificate and key files: what `check` verifies before Envoy ever sees them.
//!
//! Envoy rejects a secret whose key does not match its certificate by NACKing it, which keeps
//! the old secret but says little and says it late. Checking here turns that into a
//! `FILE:LINE:COL` problem at config load, the same path every other mistake takes: a broken
//! pair keeps the last good version serving. Checks: PEM that holds what it should, the private
//! key matching the leaf certificate (their public keys are compared), the chain in order (each
//! certificate issued by the next). Validity dates are warnings: an expired certificate is
//! served (a client may still accept it), but the operator must hear of it.

use std::time::SystemTime;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

/// What a valid certificate file tells the rest of the config layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chain {
    /// The leaf's DNS SANs.
    pub dns_names: Vec<String>,
    /// Validity problems, as warnings.
    pub warnings: Vec<String>,
    leaf_subject: String,
    leaf_public_key: Vec<u8>,
}

impl Chain {
    /// Checks that `key_pem` is the private key of the leaf certificate.
    pub fn check_key(&self, key_pem: &str) -> Result<(), String> {
        let key_spki = public_key_of(key_pem)?;
        let (_, key_spki) = SubjectPublicKeyInfo::from_der(&key_spki)
            .map_err(|e| format!("cannot read the key's public key: {e}"))?;
        if key_spki.subject_public_key.data.as_ref() != self.leaf_public_key.as_slice() {
            return Err(format!(
                "the private key does not belong to the certificate ({})",
                self.leaf_subject
            ));
        }
        Ok(())
    }
}

/// A PEM certificate chain (leaf first), with `key` its leaf's private key when given.
#[cfg(test)]
pub(crate) fn check_chain(
    chain_pem: &str,
    key_pem: Option<&str>,
    now: SystemTime,
) -> Result<Chain, String> {
    let chain = read_chain(chain_pem, now)?;
    if let Some(key_pem) = key_pem {
        chain.check_key(key_pem)?;
    }
    Ok(chain)
}

/// A PEM certificate chain (leaf first): parsed, in order, with validity warnings.
pub(crate) fn read_chain(chain_pem: &str, now: SystemTime) -> Result<Chain, String> {
    let ders = pem_blocks(chain_pem, &["CERTIFICATE"], "a certificate")?;
    let certs = ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| format!("certificate {} of the file is not valid X.509: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(leaf) = certs.first() else {
        return Err("no certificate in the file".to_owned());
    };
    for (i, pair) in certs.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(format!(
                "the chain is out of order: certificate {} ({}) was not issued by certificate {} ({}); \
                 put the leaf first, then each issuer",
                i + 1,
                pair[0].subject(),
                i + 2,
                pair[1].subject()
            ));
        }
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let which = if i == 0 {
            format!("the certificate ({})", c.subject())
        } else {
            format!("chain certificate {} ({})", i + 1, c.subject())
        };
        let validity = c.validity();
        if validity.not_after.timestamp() < now {
            warnings.push(format!("{which} expired on {}", validity.not_after));
        } else if validity.not_before.timestamp() > now {
            warnings.push(format!(
                "{which} is not valid before {}",
                validity.not_before
            ));
        }
    }
    Ok(Chain {
        dns_names: dns_names(leaf),
        warnings,
        leaf_subject: leaf.subject().to_string(),
        leaf_public_key: leaf.public_key().subject_public_key.data.to_vec(),
    })
}

/// A PEM bundle of trusted CA certificates: how many there are, and validity warnings.
pub(crate) fn check_ca_bundle(pem: &str, now: SystemTime) -> Result<Vec<String>, String> {
    let ders = pem_blocks(
        pem,
        &["CERTIFICATE", "TRUSTED CERTIFICATE"],
        "a CA certificate",
    )?;
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {} of the file is not valid X.509: {e}", i + 1))?;
        if c.validity().not_after.timestamp() < now_s {
            warnings.push(format!(
                "CA certificate {} ({}) expired on {}",
                i + 1,
                c.subject(),
                c.validity().not_after
            ));
        }
    }
    Ok(warnings)
}

/// The DER contents of the PEM blocks of `pem`, which must all carry one of `labels`.
fn pem_blocks(pem: &str, labels: &[&str], what: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem).map_err(|e| format!("not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err(format!(
            "not PEM: expected {what} (-----BEGIN CERTIFICATE-----)"
        ));
    }
    blocks
        .into_iter()
        .map(|b| {
            if labels.contains(&b.tag()) {
                Ok(b.into_contents())
            } else if b.tag().contains("PRIVATE KEY") {
                Err(format!("holds a private key where {what} was expected"))
            } else {
                Err(format!(
                    "holds a `{}` block where {what} was expected",
                    b.tag()
                ))
            }
        })
        .collect()
}

/// The SubjectPublicKeyInfo (DER) of a PEM private key: PKCS#8 (RSA, P-256, P-384, Ed25519),
/// PKCS#1 RSA or SEC1 EC. Checks the key is well-formed on the way.
pub(crate) fn public_key_of(key_pem: &str) -> Result<Vec<u8>, String> {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use rsa::pkcs1::DecodeRsaPrivateKey;

    let blocks = pem::parse_many(key_pem).map_err(|e| format!("the key file is not PEM: {e}"))?;
    let [block] = blocks.as_slice() else {
        return Err(format!(
            "the key file must hold exactly one PEM private key, found {} PEM blocks",
            blocks.len()
        ));
    };
    let der = block.contents();
    let spki = match block.tag() {
        "PRIVATE KEY" => {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
                k.to_public_key().to_public_key_der()
            } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
                k.public_key().to_public_key_der()
            } else if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
                k.public_key().to_public_key_der()
            } else if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
                k.verifying_key().to_public_key_der()
            } else {
                return Err(
                    "unsupported or malformed PKCS#8 private key (use RSA, ECDSA P-256/P-384 or Ed25519)"
                        .to_owned(),
                );
            }
        }
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map_err(|e| format!("malformed RSA private key: {e}"))?
            .to_public_key()
            .to_public_key_der(),
        "EC PRIVATE KEY" => {
            if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                k.public_key().to_public_key_der()
            } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                k.public_key().to_public_key_der()
            } else {
                return Err(
                    "unsupported or malformed EC private key (use P-256 or P-384)".to_owned(),
                );
            }
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(
                "the private key is encrypted; give Envoy a plain key (`openssl pkey -in KEY -out PLAIN`) and protect the file instead"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "holds a `{other}` block where a private key was expected"
            ));
        }
    };
    spki.map(|d| d.as_bytes().to_vec())
        .map_err(|e| format!("cannot encode the key's public key: {e}"))
}

fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, IsCa, KeyPair};
    use std::time::Duration;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        cert: rcgen::Certificate,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    fn leaf(
        names: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
        issuer: &Ca,
    ) -> (String, String) {
        // ring (rcgen's backend) cannot generate RSA keys: a fixture stands in.
        let key = if alg == &rcgen::PKCS_RSA_SHA256 {
            KeyPair::from_pem(include_str!("testdata/rsa2048.pkcs8.pem")).unwrap()
        } else {
            KeyPair::generate_for(alg).unwrap()
        };
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let issuer = rcgen::Issuer::from_params(&issuer.params, &issuer.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_passes_for_every_key_type() {
        let ca = ca();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let (cert, key) = leaf(&["api.test", "*.api.test"], alg, &ca);
            let chain = format!("{cert}{}", ca.cert.pem());
            let got = check_chain(&chain, Some(&key), SystemTime::now())
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(got.dns_names, ["api.test", "*.api.test"]);
            assert!(got.warnings.is_empty());
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = ca();
        let (cert, _) = leaf(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, &ca);
        let (_, other_key) = leaf(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, &ca);
        let err = check_chain(&cert, Some(&other_key), SystemTime::now()).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn a_chain_in_the_wrong_order_is_refused() {
        let ca = ca();
        let (cert, key) = leaf(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, &ca);
        let reversed = format!("{}{cert}", ca.cert.pem());
        let err = check_chain(&reversed, Some(&key), SystemTime::now()).unwrap_err();
        assert!(err.contains("out of order"), "{err}");
    }

    #[test]
    fn garbage_and_swapped_files_are_named() {
        let ca = ca();
        let (cert, key) = leaf(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, &ca);
        assert!(
            check_chain("hello", None, SystemTime::now())
                .unwrap_err()
                .contains("not PEM")
        );
        let swapped = check_chain(&key, Some(&cert), SystemTime::now()).unwrap_err();
        assert!(swapped.contains("private key where"), "{swapped}");
        let corrupt = cert.replace("MII", "MIJ");
        assert!(check_chain(&corrupt, None, SystemTime::now()).is_err());
    }

    #[test]
    fn expiry_is_a_warning() {
        let ca = ca();
        let (cert, key) = leaf(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, &ca);
        // 2101: after the leaf's not_after (2100-01-01).
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(131 * 365 * 86_400);
        let got = check_chain(&cert, Some(&key), far).unwrap();
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert!(got.warnings[0].contains("expired on"));
    }

    #[test]
    fn pkcs1_and_sec1_keys_are_read() {
        let pkcs8 = public_key_of(include_str!("testdata/rsa2048.pkcs8.pem")).unwrap();
        let pkcs1 = public_key_of(include_str!("testdata/rsa2048.pkcs1.pem")).unwrap();
        assert_eq!(pkcs8, pkcs1, "the same RSA key in two encodings");
        assert!(public_key_of(include_str!("testdata/p256.sec1.pem")).is_ok());
        let err = public_key_of(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
    }
}
