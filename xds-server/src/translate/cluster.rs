//! Upstreams -> Envoy clusters (and, for static endpoints, their ClusterLoadAssignments).

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck, Http2ProtocolOptions, RoutingPriority, health_check,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::{CodecClientType, Int64Range, Percent};

use super::{pb, tls};
use crate::model::{self, Balance, Endpoints, Upstream};

/// Key of `typed_extension_protocol_options` Envoy reads upstream HTTP settings from.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Bytes Envoy buffers per upstream connection before applying back-pressure: Envoy's edge
/// best practice (and Envoy Gateway's default), instead of Envoy's 1 MiB.
pub const CONNECTION_BUFFER_LIMIT: u32 = 32 * 1024;

/// Active health checks count any 2xx answer as healthy (Envoy alone accepts only 200).
const HEALTHY_STATUSES: Int64Range = Int64Range {
    start: 200,
    end: 300,
};

pub(super) fn cluster(upstream: &Upstream) -> Cluster {
    let name = upstream.name.as_str();
    let mut cluster = Cluster {
        name: name.to_owned(),
        connect_timeout: Some(pb::duration(upstream.connect_timeout)),
        lb_policy: lb_policy(&upstream.balance) as i32,
        per_connection_buffer_limit_bytes: Some(pb::u32_value(CONNECTION_BUFFER_LIMIT)),
        ..Default::default()
    };
    match &upstream.endpoints {
        Endpoints::Static(_) => {
            cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ));
            cluster.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(pb::ads()),
                // Empty: the CLA is named after the cluster.
                service_name: String::new(),
            });
        }
        Endpoints::Dns { host, port } => {
            cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            ));
            // Container and cloud resolvers often return AAAA records for names that are only
            // reachable over IPv4; prefer A records, fall back to AAAA when there are none.
            cluster.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
            cluster.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![lb_endpoint(pb::socket_address(host, *port), None)],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    if upstream.http2 {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_owned(), pb::any(options));
    }
    if let Some(t) = &upstream.tls {
        cluster.transport_socket = Some(tls::upstream(t, upstream.http2));
    }
    if let Some(hc) = &upstream.health_check {
        cluster.health_checks = vec![health_check(hc, upstream.http2)];
        // Envoy's "panic mode" sends traffic to every endpoint, failing ones included, once
        // fewer than 50% pass their checks (one failing endpoint of one: all traffic to it).
        // Whoever configures a health check means "never send to a failing endpoint": with no
        // healthy endpoint left, the gateway answers 503 no-healthy-upstream instead.
        cluster.common_lb_config = Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        });
    }
    if let Some(od) = &upstream.outlier_detection {
        cluster.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: Some(pb::u32_value(od.consecutive_5xx)),
            base_ejection_time: Some(pb::duration(od.eject_for)),
            ..Default::default()
        });
    }
    if let Some(cb) = &upstream.circuit_breaker {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: cb.max_connections.map(pb::u32_value),
                max_pending_requests: cb.max_pending.map(pb::u32_value),
                max_requests: cb.max_requests.map(pb::u32_value),
                max_retries: cb.max_retries.map(pb::u32_value),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    cluster
}

/// The endpoints of a static-endpoint (EDS) upstream; `None` for DNS upstreams, whose
/// endpoints are inline in the cluster.
pub(super) fn load_assignment(upstream: &Upstream) -> Option<ClusterLoadAssignment> {
    let Endpoints::Static(endpoints) = &upstream.endpoints else {
        return None;
    };
    Some(ClusterLoadAssignment {
        cluster_name: upstream.name.as_str().to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|e| lb_endpoint(pb::ip_address(e.address), Some(e.weight)))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn lb_endpoint(
    address: envoy_types::pb::envoy::config::core::v3::Address,
    weight: Option<u32>,
) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(address),
            ..Default::default()
        })),
        load_balancing_weight: weight.map(pb::u32_value),
        ..Default::default()
    }
}

fn lb_policy(balance: &Balance) -> cluster::LbPolicy {
    match balance {
        Balance::RoundRobin => cluster::LbPolicy::RoundRobin,
        Balance::LeastRequest => cluster::LbPolicy::LeastRequest,
        Balance::Random => cluster::LbPolicy::Random,
        Balance::RingHash(_) => cluster::LbPolicy::RingHash,
        Balance::Maglev(_) => cluster::LbPolicy::Maglev,
    }
}

fn health_check(hc: &model::HealthCheck, http2: bool) -> HealthCheck {
    let interval = pb::duration(hc.interval);
    HealthCheck {
        timeout: Some(pb::duration(hc.timeout)),
        interval: Some(interval),
        // Envoy checks hosts that got no traffic yet only every 60 s by default, so a failing
        // endpoint would keep receiving requests for up to a minute after start: the configured
        // interval applies from the beginning instead.
        no_traffic_interval: Some(interval),
        unhealthy_threshold: Some(pb::u32_value(hc.unhealthy_after)),
        healthy_threshold: Some(pb::u32_value(hc.healthy_after)),
        health_checker: Some(health_check::HealthChecker::HttpHealthCheck(
            health_check::HttpHealthCheck {
                path: hc.path.clone(),
                expected_statuses: vec![HEALTHY_STATUSES],
                codec_client_type: if http2 {
                    CodecClientType::Http2
                } else {
                    CodecClientType::Http1
                } as i32,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{CircuitBreaker, Endpoint as ModelEndpoint, HashOn, Name};

    fn upstream(endpoints: Endpoints) -> Upstream {
        Upstream {
            connect_timeout: Duration::from_millis(1500),
            ..Upstream::new(Name::new("orders").expect("valid"), endpoints)
        }
    }

    fn static_endpoints() -> Endpoints {
        Endpoints::Static(vec![
            ModelEndpoint {
                address: "10.0.0.11:8080".parse().expect("addr"),
                weight: 1,
            },
            ModelEndpoint {
                address: "[::1]:8081".parse().expect("addr"),
                weight: 3,
            },
        ])
    }

    #[test]
    fn static_endpoints_are_served_over_eds_via_ads() {
        let up = upstream(static_endpoints());
        let c = cluster(&up);
        assert_eq!(c.name, "orders");
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        let eds = c.eds_cluster_config.expect("eds config");
        assert_eq!(eds.eds_config, Some(pb::ads()));
        assert!(c.load_assignment.is_none());
        assert_eq!(
            c.connect_timeout,
            Some(pb::duration(Duration::from_millis(1500)))
        );

        let cla = load_assignment(&up).expect("cla");
        assert_eq!(cla.cluster_name, "orders");
        let eps = &cla.endpoints[0].lb_endpoints;
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].load_balancing_weight, Some(pb::u32_value(3)));
        let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &eps[1].host_identifier else {
            panic!("endpoint expected");
        };
        assert_eq!(e.address, Some(pb::socket_address("::1", 8081)));
    }

    #[test]
    fn dns_upstreams_are_strict_dns_with_inline_endpoints() {
        let up = upstream(Endpoints::Dns {
            host: "orders.internal".into(),
            port: 8080,
        });
        let c = cluster(&up);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32
            ))
        );
        assert!(c.eds_cluster_config.is_none());
        let cla = c.load_assignment.expect("inline endpoints");
        let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
            &cla.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("endpoint expected");
        };
        assert_eq!(e.address, Some(pb::socket_address("orders.internal", 8080)));
        assert!(load_assignment(&up).is_none());
    }

    #[test]
    fn balance_maps_to_lb_policy() {
        for (balance, policy) in [
            (Balance::RoundRobin, cluster::LbPolicy::RoundRobin),
            (Balance::LeastRequest, cluster::LbPolicy::LeastRequest),
            (Balance::Random, cluster::LbPolicy::Random),
            (Balance::RingHash(HashOn::Ip), cluster::LbPolicy::RingHash),
            (Balance::Maglev(HashOn::Ip), cluster::LbPolicy::Maglev),
        ] {
            let mut up = upstream(static_endpoints());
            up.balance = balance;
            assert_eq!(cluster(&up).lb_policy, policy as i32);
        }
    }

    #[test]
    fn http2_upstreams_get_explicit_http2_protocol_options() {
        let mut up = upstream(static_endpoints());
        assert!(cluster(&up).typed_extension_protocol_options.is_empty());
        up.http2 = true;
        let c = cluster(&up);
        let any = &c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        let options: HttpProtocolOptions =
            prost::Message::decode(any.value.as_slice()).expect("decodes");
        assert!(matches!(
            options.upstream_protocol_options,
            Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)
                    )
                }
            ))
        ));
    }

    #[test]
    fn health_check_interval_holds_from_the_start() {
        let mut up = upstream(static_endpoints());
        up.health_check = Some(model::HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_after: 2,
            unhealthy_after: 3,
        });
        let c = cluster(&up);
        let hc = &c.health_checks[0];
        assert_eq!(hc.interval, Some(pb::duration(Duration::from_secs(5))));
        assert_eq!(hc.no_traffic_interval, hc.interval);
        assert_eq!(hc.timeout, Some(pb::duration(Duration::from_secs(1))));
        assert_eq!(hc.healthy_threshold, Some(pb::u32_value(2)));
        assert_eq!(hc.unhealthy_threshold, Some(pb::u32_value(3)));
        let Some(health_check::HealthChecker::HttpHealthCheck(http)) = &hc.health_checker else {
            panic!("http health check expected");
        };
        assert_eq!(http.path, "/healthz");
        assert_eq!(http.expected_statuses, vec![HEALTHY_STATUSES]);
        assert_eq!(
            c.common_lb_config.and_then(|lb| lb.healthy_panic_threshold),
            Some(Percent { value: 0.0 }),
            "no panic mode: failing endpoints get no traffic"
        );
        assert!(
            cluster(&upstream(static_endpoints()))
                .common_lb_config
                .is_none()
        );
    }

    #[test]
    fn outlier_detection_and_circuit_breaker() {
        let mut up = upstream(static_endpoints());
        up.outlier_detection = Some(model::OutlierDetection {
            consecutive_5xx: 7,
            eject_for: Duration::from_secs(30),
        });
        up.circuit_breaker = Some(CircuitBreaker {
            max_connections: Some(1024),
            max_retries: Some(3),
            ..Default::default()
        });
        let c = cluster(&up);
        let od = c.outlier_detection.expect("outlier detection");
        assert_eq!(od.consecutive_5xx, Some(pb::u32_value(7)));
        assert_eq!(
            od.base_ejection_time,
            Some(pb::duration(Duration::from_secs(30)))
        );
        let t = &c.circuit_breakers.expect("circuit breakers").thresholds[0];
        assert_eq!(t.priority, RoutingPriority::Default as i32);
        assert_eq!(t.max_connections, Some(pb::u32_value(1024)));
        assert_eq!(t.max_pending_requests, None);
        assert_eq!(t.max_requests, None);
        assert_eq!(t.max_retries, Some(pb::u32_value(3)));
    }
}
