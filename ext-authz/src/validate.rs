//! The pure validator: no I/O, no clock of its own. [`parse`] reads the token's header (after
//! the size bound), the caller finds the key, [`verify`] checks the signature and only then
//! decodes and checks the claims, [`authorize`] applies a route's roles and scopes.
//!
//! Every refusal is a [`Reason`]: it goes to logs and metrics, never to the client.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::jwks::VerifyingKey;
use crate::policy::{Algorithm, AlgorithmSet, Provider, RouteAuth};

/// Tokens longer than this are refused before any decoding. Keycloak access tokens with many
/// roles are a few KiB; 16 KiB leaves room and bounds the work an anonymous client can cause.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Header members that point at or embed a key: trusting them would let the token choose its
/// own verification key, so a token carrying any of them is refused outright.
const KEY_BEARING_HEADERS: &[&str] = &["jku", "x5u", "jwk", "x5c"];

/// Why a request was refused. `as_str` is the metrics label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    Oversized,
    Malformed,
    AlgNone,
    AlgHmac,
    AlgNotAllowed,
    AlgUnknown,
    TypeNotAllowed,
    EmbeddedKey,
    CritUnsupported,
    UnknownKid,
    KeyMismatch,
    BadSignature,
    BadClaims,
    MissingExp,
    Expired,
    NotYetValid,
    IssuedInFuture,
    BadIssuer,
    BadAudience,
    ProviderUnavailable,
    MissingRole,
    MissingScope,
    UnknownRoute,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::MissingToken,
        Reason::Oversized,
        Reason::Malformed,
        Reason::AlgNone,
        Reason::AlgHmac,
        Reason::AlgNotAllowed,
        Reason::AlgUnknown,
        Reason::TypeNotAllowed,
        Reason::EmbeddedKey,
        Reason::CritUnsupported,
        Reason::UnknownKid,
        Reason::KeyMismatch,
        Reason::BadSignature,
        Reason::BadClaims,
        Reason::MissingExp,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::IssuedInFuture,
        Reason::BadIssuer,
        Reason::BadAudience,
        Reason::ProviderUnavailable,
        Reason::MissingRole,
        Reason::MissingScope,
        Reason::UnknownRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Oversized => "oversized",
            Reason::Malformed => "malformed",
            Reason::AlgNone => "alg_none",
            Reason::AlgHmac => "alg_hmac",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::AlgUnknown => "alg_unknown",
            Reason::TypeNotAllowed => "typ_not_allowed",
            Reason::EmbeddedKey => "embedded_key",
            Reason::CritUnsupported => "crit_unsupported",
            Reason::UnknownKid => "unknown_kid",
            Reason::KeyMismatch => "key_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::BadClaims => "bad_claims",
            Reason::MissingExp => "missing_exp",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::BadIssuer => "bad_issuer",
            Reason::BadAudience => "bad_audience",
            Reason::ProviderUnavailable => "provider_unavailable",
            Reason::MissingRole => "missing_role",
            Reason::MissingScope => "missing_scope",
            Reason::UnknownRoute => "unknown_route",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token whose header passed every check; nothing in its payload is trusted yet.
pub struct Parsed<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    signing_input: &'a str,
    payload_b64: &'a str,
    signature_b64: &'a str,
}

/// Only the header facts: the token's parts stay out of any log line.
impl std::fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Size bound, JWS compact structure, header checks and the provider's algorithm allow-list.
pub fn parse(token: &str, allowed: AlgorithmSet) -> Result<Parsed<'_>, Reason> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::Oversized);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Includes 5-part JWE: an encrypted token cannot be verified with public keys.
        return Err(Reason::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(Reason::Malformed);
    }
    let header = decode_object(h)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(Reason::Malformed),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(Reason::AlgNone);
    }
    if alg.starts_with("HS") {
        return Err(Reason::AlgHmac);
    }
    let alg: Algorithm = alg.parse().map_err(|_| Reason::AlgUnknown)?;
    if !allowed.contains(alg) {
        return Err(Reason::AlgNotAllowed);
    }
    if KEY_BEARING_HEADERS.iter().any(|k| header.contains_key(*k)) {
        return Err(Reason::EmbeddedKey);
    }
    // RFC 7515 §4.1.11: a recipient that does not understand a listed extension must reject.
    // vrata understands none, so any `crit` refuses the token.
    if header.contains_key("crit") {
        return Err(Reason::CritUnsupported);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if typ_allowed(t) => {}
        Some(_) => return Err(Reason::TypeNotAllowed),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reason::Malformed),
    };
    if s.is_empty() {
        return Err(Reason::BadSignature);
    }
    Ok(Parsed {
        alg,
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature_b64: s,
    })
}

/// Access tokens: Keycloak writes `JWT`, RFC 9068 `at+jwt`. Other explicit types (logout
/// tokens, DPoP proofs, ...) are JWTs for another purpose and must not pass as bearer tokens.
fn typ_allowed(t: &str) -> bool {
    ["JWT", "at+jwt", "application/at+jwt"]
        .iter()
        .any(|ok| t.eq_ignore_ascii_case(ok))
}

fn decode_object(b64: &str) -> Result<Map<String, Value>, Reason> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Reason::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Reason::Malformed),
    }
}

/// What a valid token says, extracted once and cached.
#[derive(Debug)]
pub struct Identity {
    pub claims: Map<String, Value>,
    pub roles: HashSet<String>,
    pub scopes: HashSet<String>,
    pub exp: u64,
    /// The JWKS entry that verified it: a cached identity is dropped when that key leaves
    /// the provider's key set.
    pub key_id: Arc<str>,
}

impl Identity {
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Signature first (with a key whose type and `alg` agree with the header), then the claims:
/// `exp` required, `nbf`/`iat` with leeway, `iss` exact, `aud` containing one of the audiences.
pub fn verify(
    parsed: &Parsed<'_>,
    key: &VerifyingKey,
    provider: &Provider,
    now_secs: u64,
) -> Result<Identity, Reason> {
    if !key.accepts(parsed.alg) {
        return Err(Reason::KeyMismatch);
    }
    match jsonwebtoken::crypto::verify(
        parsed.signature_b64,
        parsed.signing_input.as_bytes(),
        &key.decoding,
        parsed.alg.to_jsonwebtoken(),
    ) {
        Ok(true) => {}
        // Err: undecodable signature or a key the backend refuses (e.g. RSA < 2048 bits).
        Ok(false) | Err(_) => return Err(Reason::BadSignature),
    }
    let claims = decode_object(parsed.payload_b64).map_err(|_| Reason::BadClaims)?;
    let exp = check_times(&claims, provider.leeway_secs, now_secs)?;
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == provider.issuer => {}
        _ => return Err(Reason::BadIssuer),
    }
    if !audience_ok(claims.get("aud"), &provider.audiences) {
        return Err(Reason::BadAudience);
    }
    let mut roles = HashSet::new();
    for path in &provider.roles_claims {
        collect_strings(path.lookup(&claims), false, &mut roles);
    }
    let mut scopes = HashSet::new();
    collect_strings(claims.get("scope"), true, &mut scopes);
    collect_strings(claims.get("scp"), true, &mut scopes);
    Ok(Identity {
        claims,
        roles,
        scopes,
        exp,
        key_id: key.id.clone(),
    })
}

/// Returns `exp` (whole seconds, rounded down so a cached identity never outlives it).
fn check_times(claims: &Map<String, Value>, leeway: u64, now: u64) -> Result<u64, Reason> {
    let date = |name: &str| -> Result<Option<f64>, Reason> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(Reason::BadClaims),
            },
            Some(_) => Err(Reason::BadClaims),
        }
    };
    let now_f = now as f64;
    let leeway_f = leeway as f64;
    let exp = date("exp")?.ok_or(Reason::MissingExp)?;
    // RFC 7519 §4.1.4: the current time must be before exp.
    if now_f >= exp + leeway_f {
        return Err(Reason::Expired);
    }
    if let Some(nbf) = date("nbf")?
        && now_f + leeway_f < nbf
    {
        return Err(Reason::NotYetValid);
    }
    if let Some(iat) = date("iat")?
        && iat > now_f + leeway_f
    {
        return Err(Reason::IssuedInFuture);
    }
    // Saturating float-to-int cast: absurd exp values become u64::MAX, still checked above.
    Ok(exp.floor() as u64)
}

fn audience_ok(aud: Option<&Value>, accepted: &[String]) -> bool {
    match aud {
        Some(Value::String(a)) => accepted.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

/// Strings from an array, or one string (split on spaces where the claim is a space-separated
/// list, as OAuth `scope` is). Other JSON types contribute nothing.
fn collect_strings(v: Option<&Value>, split_spaces: bool, out: &mut HashSet<String>) {
    match v {
        Some(Value::String(s)) if split_spaces => {
            out.extend(s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned))
        }
        Some(Value::String(s)) => {
            out.insert(s.clone());
        }
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned)),
        _ => {}
    }
}

/// A route's roles and scopes against a validated identity.
pub fn authorize(identity: &Identity, auth: &RouteAuth) -> Result<(), Reason> {
    if !auth.roles.is_met_by(&identity.roles) {
        return Err(Reason::MissingRole);
    }
    if !auth.scopes.is_met_by(&identity.scopes) {
        return Err(Reason::MissingScope);
    }
    Ok(())
}

/// The header value a claim is forwarded as: strings as they are, arrays comma-separated,
/// other scalars as JSON text, objects as compact JSON. `None` when the claim is absent.
pub fn claim_header_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn token(header: serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            b64(&header),
            b64(&serde_json::json!({"sub": "x"}))
        )
    }

    fn all() -> AlgorithmSet {
        Algorithm::ALL.into_iter().collect()
    }

    #[test]
    fn header_checks_refuse_the_classic_attacks() {
        use serde_json::json;
        let cases = [
            (json!({"alg": "none"}), Reason::AlgNone),
            (json!({"alg": "None"}), Reason::AlgNone),
            (json!({"alg": "HS256"}), Reason::AlgHmac),
            (json!({"alg": "ES512"}), Reason::AlgUnknown),
            (json!({"alg": 5}), Reason::Malformed),
            (json!({"kid": "k"}), Reason::Malformed),
            (
                json!({"alg": "RS256", "jku": "https://evil"}),
                Reason::EmbeddedKey,
            ),
            (
                json!({"alg": "RS256", "x5u": "https://evil"}),
                Reason::EmbeddedKey,
            ),
            (
                json!({"alg": "RS256", "jwk": {"kty": "RSA"}}),
                Reason::EmbeddedKey,
            ),
            (
                json!({"alg": "RS256", "crit": ["exp"]}),
                Reason::CritUnsupported,
            ),
            (
                json!({"alg": "RS256", "typ": "logout+jwt"}),
                Reason::TypeNotAllowed,
            ),
            (json!({"alg": "RS256", "kid": 1}), Reason::Malformed),
        ];
        for (header, reason) in cases {
            assert_eq!(
                parse(&token(header.clone()), all()).unwrap_err(),
                reason,
                "{header}"
            );
        }
        let t = token(json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1"}));
        let ok = parse(&t, all()).unwrap();
        assert_eq!(ok.alg, Algorithm::RS256);
        assert_eq!(ok.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn allow_list_and_structure() {
        let only_es: AlgorithmSet = [Algorithm::ES256].into_iter().collect();
        let t = token(serde_json::json!({"alg": "RS256"}));
        assert_eq!(parse(&t, only_es).unwrap_err(), Reason::AlgNotAllowed);
        assert_eq!(parse("a.b", all()).unwrap_err(), Reason::Malformed);
        assert_eq!(parse("a.b.c.d.e", all()).unwrap_err(), Reason::Malformed);
        assert_eq!(parse("!!.b.c", all()).unwrap_err(), Reason::Malformed);
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse(&huge, all()).unwrap_err(), Reason::Oversized);
        let no_sig = t.trim_end_matches("c2ln").to_owned();
        assert_eq!(parse(&no_sig, all()).unwrap_err(), Reason::BadSignature);
    }

    #[test]
    fn times_with_leeway() {
        let c = |v: serde_json::Value| v.as_object().unwrap().clone();
        let now = 1_000;
        assert_eq!(
            check_times(&c(serde_json::json!({})), 0, now),
            Err(Reason::MissingExp)
        );
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": "2000"})), 0, now),
            Err(Reason::BadClaims)
        );
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 1000})), 0, now),
            Err(Reason::Expired)
        );
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 990})), 30, now),
            Ok(990)
        );
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 1001.5})), 0, now),
            Ok(1001)
        );
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 2000, "nbf": 1031})), 30, now),
            Err(Reason::NotYetValid)
        );
        assert!(check_times(&c(serde_json::json!({"exp": 2000, "nbf": 1030})), 30, now).is_ok());
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 2000, "iat": 1031})), 30, now),
            Err(Reason::IssuedInFuture)
        );
    }

    #[test]
    fn audiences_and_scope_lists() {
        let acc = vec!["api".to_string()];
        assert!(audience_ok(Some(&serde_json::json!("api")), &acc));
        assert!(audience_ok(Some(&serde_json::json!(["x", "api"])), &acc));
        assert!(!audience_ok(Some(&serde_json::json!(["x"])), &acc));
        assert!(!audience_ok(None, &acc));
        assert!(!audience_ok(Some(&serde_json::json!(1)), &acc));
        let mut s = HashSet::new();
        collect_strings(Some(&serde_json::json!("read  write")), true, &mut s);
        collect_strings(Some(&serde_json::json!(["admin"])), true, &mut s);
        let mut want: Vec<_> = s.into_iter().collect();
        want.sort();
        assert_eq!(want, ["admin", "read", "write"]);
    }

    #[test]
    fn header_values_from_claims() {
        assert_eq!(
            claim_header_value(&serde_json::json!("u1")).as_deref(),
            Some("u1")
        );
        assert_eq!(
            claim_header_value(&serde_json::json!(["a", "b", 3])).as_deref(),
            Some("a,b,3")
        );
        assert_eq!(
            claim_header_value(&serde_json::json!(true)).as_deref(),
            Some("true")
        );
        assert_eq!(claim_header_value(&serde_json::json!(null)), None);
    }
}
