//! The config resource ext-authz gets from xds-server (`vrata.config.v1.AuthzPolicy`) turned
//! into a [`PolicySpec`], and checked by compiling it: anything [`Authz::apply`] would refuse is
//! refused here, which NACKs the version (ext-authz keeps its last good policy and xds-server
//! shows the message).
//!
//! [`Authz::apply`]: crate::Authz::apply

use std::str::FromStr;
use std::time::Duration;

use vrata_proto::vrata::config::v1 as pb;

use crate::policy::{
    Algorithm, Policies, PolicyError, PolicySpec, ProviderSpec, RequirementSpec, RouteAuthSpec,
    RouteSpec, UnknownAlgorithm,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected exactly one AuthzPolicy resource, got {0}")]
    ResourceCount(usize),
    #[error("provider {provider:?}: {source}")]
    Algorithm {
        provider: String,
        source: UnknownAlgorithm,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A complete version: xds-server serves exactly one resource of this type. The spec's
/// `version` is left empty: the caller sets the xDS version it came with.
pub fn from_resources(resources: Vec<pb::AuthzPolicy>) -> Result<PolicySpec, ConfigError> {
    let count = resources.len();
    let mut it = resources.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => from_proto(one),
        _ => Err(ConfigError::ResourceCount(count)),
    }
}

pub fn from_proto(policy: pb::AuthzPolicy) -> Result<PolicySpec, ConfigError> {
    let mut providers = Vec::with_capacity(policy.providers.len());
    for p in policy.providers {
        let algorithms = p
            .algorithms
            .iter()
            .map(|a| Algorithm::from_str(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConfigError::Algorithm {
                provider: p.name.clone(),
                source,
            })?;
        providers.push(ProviderSpec {
            name: p.name,
            issuer: p.issuer,
            jwks_url: (!p.jwks_url.is_empty()).then_some(p.jwks_url),
            audiences: p.audiences,
            algorithms,
            leeway: Duration::from_millis(p.leeway_ms),
            roles_claims: p.roles_claims,
            jwks_refresh: Duration::from_millis(p.jwks_refresh_ms),
            jwks_min_refetch: Duration::from_millis(p.jwks_min_refetch_ms),
        });
    }
    let requirement = |r: Option<pb::Requirement>| {
        let r = r.unwrap_or_default();
        RequirementSpec {
            any_of: r.any_of,
            all_of: r.all_of,
        }
    };
    let routes = policy
        .routes
        .into_iter()
        .map(|r| RouteSpec {
            name: r.route,
            auth: Some(RouteAuthSpec {
                provider: r.provider,
                roles: requirement(r.roles),
                scopes: requirement(r.scopes),
                optional: r.optional,
                forward_claims: r
                    .forward_claims
                    .into_iter()
                    .map(|f| (f.header, f.claim))
                    .collect(),
                metadata_claims: r.metadata_claims,
            }),
        })
        .collect();
    let spec = PolicySpec {
        version: String::new(),
        providers,
        routes,
    };
    // The same compilation `Authz::apply` does: a version it would refuse is NACKed here.
    Policies::compile(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> pb::AuthProvider {
        pb::AuthProvider {
            name: "kc".into(),
            issuer: "https://sso.example.com/realms/demo".into(),
            jwks_url: String::new(),
            audiences: vec!["api".into()],
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway_ms: 30_000,
            roles_claims: vec!["realm_access.roles".into()],
            jwks_refresh_ms: 600_000,
            jwks_min_refetch_ms: 30_000,
        }
    }

    fn route(provider: &str) -> pb::RouteAuth {
        pb::RouteAuth {
            route: "orders".into(),
            provider: provider.into(),
            roles: Some(pb::Requirement {
                any_of: vec!["orders:read".into()],
                all_of: vec![],
            }),
            scopes: None,
            optional: true,
            forward_claims: vec![pb::ForwardClaim {
                header: "x-user-id".into(),
                claim: "sub".into(),
            }],
            metadata_claims: vec!["sub".into(), "tenant.id".into()],
        }
    }

    #[test]
    fn converts_one_to_one() {
        let spec = from_resources(vec![pb::AuthzPolicy {
            providers: vec![provider()],
            routes: vec![route("kc")],
        }])
        .expect("valid");
        assert_eq!(
            spec.providers[0],
            ProviderSpec {
                name: "kc".into(),
                issuer: "https://sso.example.com/realms/demo".into(),
                jwks_url: None,
                audiences: vec!["api".into()],
                algorithms: vec![Algorithm::RS256, Algorithm::ES256],
                leeway: Duration::from_secs(30),
                roles_claims: vec!["realm_access.roles".into()],
                jwks_refresh: Duration::from_secs(600),
                jwks_min_refetch: Duration::from_secs(30),
            }
        );
        let auth = spec.routes[0].auth.as_ref().expect("auth");
        assert_eq!(spec.routes[0].name, "orders");
        assert_eq!(auth.roles.any_of, ["orders:read"]);
        assert_eq!(auth.scopes, RequirementSpec::default());
        assert!(auth.optional);
        assert_eq!(auth.forward_claims, [("x-user-id".into(), "sub".into())]);
    }

    #[test]
    fn versions_ext_authz_would_refuse_are_errors() {
        assert_eq!(from_resources(vec![]), Err(ConfigError::ResourceCount(0)));
        let mut bad_alg = provider();
        bad_alg.algorithms = vec!["HS256".into()];
        assert!(matches!(
            from_proto(pb::AuthzPolicy {
                providers: vec![bad_alg],
                routes: vec![]
            }),
            Err(ConfigError::Algorithm { .. })
        ));
        assert_eq!(
            from_proto(pb::AuthzPolicy {
                providers: vec![provider()],
                routes: vec![route("nope")]
            }),
            Err(ConfigError::Policy(PolicyError::UnknownProvider {
                route: "orders".into(),
                provider: "nope".into()
            }))
        );
    }
}
