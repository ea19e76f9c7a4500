//! What the gateway tells the services about the caller: the client IP it saw (X-Forwarded-For only
//! from trusted proxies), the user agent, and the request headers that become gRPC metadata.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Headers copied to metadata as they are (lower-case names are the same in both).
pub const FORWARDED: [&str; 4] = [
    "authorization",
    "idempotency-key",
    "traceparent",
    "tracestate",
];

/// The client IP: the peer, or, when the peer is a trusted proxy, the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// A request id from the client when it is sane (printable, ≤ 128 chars), else a new UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The metadata sent upstream with a call.
pub fn metadata(headers: &HeaderMap, client_ip: IpAddr, request_id: &str) -> MetadataMap {
    let mut md = MetadataMap::new();
    for name in FORWARDED {
        if let Some(v) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| MetadataValue::try_from(v).ok())
        {
            md.insert(name, v);
        }
    }
    // the upstream's parent is the gateway's request span (when there is one), not the client's
    platform::telemetry::inject_traceparent_metadata(&mut md);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert(platform::caller::REQUEST_ID, v);
    }
    if let Ok(v) = MetadataValue::try_from(client_ip.to_string()) {
        md.insert(platform::caller::CLIENT_IP, v);
    }
    let ua: String = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(512)
        .collect();
    if !ua.is_empty()
        && let Ok(v) = MetadataValue::try_from(ua)
    {
        md.insert(platform::caller::CLIENT_USER_AGENT, v);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &xff("1.2.3.4"), &[]), peer);
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(peer, &xff("1.2.3.4"), &trusted), peer);
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_gives_the_first_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        // a client-written spoof on the left is not believed: right-most untrusted wins
        assert_eq!(
            client_ip(peer, &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn request_id_is_kept_when_sane_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", "x".repeat(200).parse().unwrap());
        assert_eq!(request_id(&h).len(), 36);
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }

    #[test]
    fn metadata_carries_credentials_client_facts_and_trace_context() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer t".parse().unwrap());
        h.insert("idempotency-key", "k1".parse().unwrap());
        h.insert("traceparent", "00-abc-def-01".parse().unwrap());
        h.insert("user-agent", "curl/8".parse().unwrap());
        h.insert("cookie", "secret".parse().unwrap());
        let md = metadata(&h, "192.0.2.1".parse().unwrap(), "rid");
        assert_eq!(md.get("authorization").unwrap(), "Bearer t");
        assert_eq!(md.get("idempotency-key").unwrap(), "k1");
        assert_eq!(md.get("traceparent").unwrap(), "00-abc-def-01");
        assert_eq!(md.get("x-client-ip").unwrap(), "192.0.2.1");
        assert_eq!(md.get("x-client-user-agent").unwrap(), "curl/8");
        assert_eq!(md.get("x-request-id").unwrap(), "rid");
        assert!(md.get("cookie").is_none());
    }
}
