//! Where a delivery may go (outbound safety, against server-side request forgery): only
//! `http`/`https` URLs without credentials, and, unless the operator allows it
//! (`delivery.allow_private_destinations`), only public unicast addresses: no loopback, private
//! (RFC 1918, unique-local), link-local (169.254.0.0/16 with the cloud metadata address
//! 169.254.169.254, fe80::/10), shared (100.64.0.0/10), unspecified, multicast, broadcast,
//! documentation or reserved ranges, and no IPv4 hidden in an IPv6 address (mapped, NAT64).
//!
//! The rule is applied twice: at registration, to every address the host resolves to, and at
//! connect time by [`GuardedResolver`], the HTTP client's resolver, which hands the client only
//! allowed addresses, so a name that later resolves elsewhere (DNS rebinding) is refused then.
//! A URL with an IP literal never reaches a resolver; [`check_literal`] covers it before sending.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Longest URL accepted (the column's CHECK allows the same).
pub const URL_MAX_CHARS: usize = 2048;

/// How long resolving a host at registration may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a URL is refused; the text is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a valid absolute URL")]
    Invalid,
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("credentials in the URL are not allowed")]
    Credentials,
    #[error("at most {URL_MAX_CHARS} characters")]
    TooLong,
    #[error("the host does not resolve")]
    Unresolved,
    #[error("the destination {0} is not a public address")]
    NotPublic(IpAddr),
}

/// What the operator allows.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub allow_private: bool,
}

impl Policy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// Parses and checks a URL at registration, resolving its host now.
    pub async fn check_url(&self, text: &str) -> Result<Url, Refused> {
        if text.chars().count() > URL_MAX_CHARS {
            return Err(Refused::TooLong);
        }
        let url = Url::parse(text).map_err(|_| Refused::Invalid)?;
        // the stored (normalised, percent-encoded) form is what the column bounds
        if url.as_str().len() > URL_MAX_CHARS {
            return Err(Refused::TooLong);
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let host = url.host_str().ok_or(Refused::Invalid)?;
        if let Some(ip) = literal_ip(&url) {
            return self.check_ip(ip).map(|()| url);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        // bounded: a name whose servers do not answer must not hold the request to its deadline
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| Refused::Unresolved)?
                .map_err(|_| Refused::Unresolved)?
                .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolved);
        }
        for a in addrs {
            self.check_ip(a.ip())?;
        }
        Ok(url)
    }

    /// The connect-time check of a URL whose host is an IP literal (no resolver sees it).
    pub fn check_literal(&self, url: &Url) -> Result<(), Refused> {
        match literal_ip(url) {
            Some(ip) => self.check_ip(ip),
            None => Ok(()),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(Refused::NotPublic(ip))
        }
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The HTTP client's resolver: the system's answer without the addresses the policy refuses; an
/// error when none is left, so the client never connects to a refused address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver(pub Policy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                let refused = found
                    .first()
                    .map_or(Refused::Unresolved, |a| Refused::NotPublic(a.ip()));
                return Err(Box::new(std::io::Error::other(refused.to_string()))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(policy: Policy) -> Arc<Self> {
        Arc::new(Self(policy))
    }
}

/// A public unicast address: none of the special-purpose ranges (IANA registries, RFC 6890).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: [(u32, u8); 15] = [
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
        (0x0a00_0000, 8),  // 10.0.0.0/8 private
        (0x6440_0000, 10), // 100.64.0.0/10 shared (carrier NAT)
        (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
        (0xa9fe_0000, 16), // 169.254.0.0/16 link-local, cloud metadata 169.254.169.254
        (0xac10_0000, 12), // 172.16.0.0/12 private
        (0xc000_0000, 24), // 192.0.0.0/24 protocol assignments
        (0xc000_0200, 24), // 192.0.2.0/24 documentation
        (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay
        (0xc0a8_0000, 16), // 192.168.0.0/16 private
        (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
        (0xc633_6400, 24), // 198.51.100.0/24 documentation
        (0xcb00_7100, 24), // 203.0.113.0/24 documentation
        (0xe000_0000, 4),  // 224.0.0.0/4 multicast
        (0xf000_0000, 4),  // 240.0.0.0/4 reserved, 255.255.255.255 broadcast
    ];
    !BLOCKED.iter().any(|&(net, len)| {
        Ipv4Net::new(Ipv4Addr::from(net), len).is_ok_and(|n| IpNet::V4(n).contains(&IpAddr::V4(ip)))
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    const BLOCKED: [(u128, u8); 9] = [
        (0, 128),                                        // :: unspecified
        (1, 128),                                        // ::1 loopback
        (0, 96),                                         // ::/96 IPv4-compatible (deprecated)
        (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64 discard
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 documentation
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 2002::/16 6to4 (embeds IPv4)
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7 unique local
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10 link-local (and fec0::/10 below)
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8 multicast
    ];
    let site_local =
        Ipv6Net::new(Ipv6Addr::from(0xfec0_u128 << 112), 10).is_ok_and(|n| n.contains(&ip));
    !site_local
        && !BLOCKED.iter().any(|&(net, len)| {
            Ipv6Net::new(Ipv6Addr::from(net), len).is_ok_and(|n| n.contains(&ip))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must not be public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn the_default_policy_refuses_loopback_and_metadata_urls_and_odd_schemes() {
        let strict = Policy {
            allow_private: false,
        };
        for (url, refused) in [
            (
                "http://127.0.0.1:9/hook",
                Refused::NotPublic("127.0.0.1".parse().unwrap()),
            ),
            (
                "http://169.254.169.254/latest/meta-data",
                Refused::NotPublic("169.254.169.254".parse().unwrap()),
            ),
            ("http://[::1]/x", Refused::NotPublic("::1".parse().unwrap())),
            ("ftp://example.com/x", Refused::Scheme),
            ("file:///etc/passwd", Refused::Scheme),
            ("http://user:pw@example.com/", Refused::Credentials),
            ("not a url", Refused::Invalid),
        ] {
            assert_eq!(strict.check_url(url).await.unwrap_err(), refused, "{url}");
        }
        // a name that resolves to loopback is refused like the literal
        assert!(matches!(
            strict.check_url("http://localhost:9/").await,
            Err(Refused::NotPublic(_))
        ));
        let dev = Policy {
            allow_private: true,
        };
        assert!(dev.check_url("http://127.0.0.1:9/hook").await.is_ok());
    }
}
