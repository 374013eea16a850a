//! The two Services: a headless one whose only job is stable per-pod DNS
//! (`<pod>.<name>-pods.<ns>.svc`), and a client Service in front of the
//! ready pods.
//!
//! With `spec.tls` the HTTP port's `appProtocol` is `https` (gRPC stays
//! `grpc`, over TLS or not), so meshes and gateways know what they proxy.
//!
//! The headless Service publishes pods that are not ready: a draining pod
//! answers 503 on `/ready`, yet routers and queriers that address pods by
//! name must still reach it to read what it has not persisted yet.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, selector_labels};
use crate::reconcile::validate::{GRPC_PORT, HTTP_PORT, ValidatedIngester};

fn ports(v: &ValidatedIngester) -> Vec<ServicePort> {
    let http = if v.security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    vec![
        ServicePort {
            name: Some("grpc".into()),
            port: GRPC_PORT,
            target_port: Some(IntOrString::String("grpc".into())),
            protocol: Some("TCP".into()),
            app_protocol: Some("grpc".into()),
            ..Default::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: HTTP_PORT,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            app_protocol: Some(http.into()),
            ..Default::default()
        },
    ]
}

pub fn build_headless(v: &ValidatedIngester) -> Service {
    Service {
        metadata: meta(v, v.headless_service_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(v)),
            ports: Some(ports(v)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_client(v: &ValidatedIngester) -> Service {
    Service {
        metadata: meta(v, v.client_service_name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(v)),
            ports: Some(ports(v)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::validated;

    #[test]
    fn headless_service_gives_every_pod_dns() {
        let v = validated("cluster.yaml");
        let s = build_headless(&v);
        assert_eq!(s.metadata.name.as_deref(), Some("ingest-pods"));
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(selector_labels(&v)));
    }

    #[test]
    fn client_service_exposes_grpc_and_http() {
        let v = validated("cluster.yaml");
        let s = build_client(&v);
        assert_eq!(s.metadata.name.as_deref(), Some("ingest"));
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip, None, "the API server allocates it");
        let ports: Vec<_> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(ports, [("grpc".into(), 8082), ("http".into(), 8080)]);
    }
}
