//! Which outgoing HTTP requests a run may make: [`HostPattern`] (one entry of
//! the allow-list) and [`HttpPolicy`] (the list, plus the check of resolved
//! addresses).
//!
//! A pattern is `scheme://host[:port]`: the scheme is `http`, `https` or `*`;
//! the host is a name, `*.domain` (any subdomain, not the domain itself),
//! `*` (any host), an IP literal or a CIDR block (`10.0.0.0/8`, IPv6 in
//! brackets); the port is a number or `*`, and defaults to the scheme's port.
//!
//! Addresses in loopback, private, link-local (cloud metadata), shared,
//! multicast and reserved ranges are refused after DNS resolution, whatever
//! the name, unless an IP or CIDR pattern names them literally.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP allow pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.suffix`: stored with the leading dot.
    Subdomains(String),
    Net(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeMatch {
    Http,
    Https,
    Any,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    scheme: SchemeMatch,
    host: HostMatch,
    /// `None`: any port.
    port: Option<u16>,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host[:port], e.g. https://api.example.com"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemeMatch::Http,
            "https" => SchemeMatch::Https,
            "*" => SchemeMatch::Any,
            _ => return Err(err("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_port(rest);
        if host.contains('/') && host.parse::<IpNet>().is_err() {
            return Err(err("patterns name hosts, not paths"));
        }
        let port = match port {
            None => match scheme {
                SchemeMatch::Http => Some(80),
                SchemeMatch::Https => Some(443),
                SchemeMatch::Any => None,
            },
            Some("*") => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| err("the port must be a number or *"))?,
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(err("a wildcard must look like *.example.com"));
            }
            HostMatch::Subdomains(format!(".{}", suffix.to_ascii_lowercase()))
        } else if host.contains('*') {
            return Err(err(
                "a wildcard is only allowed as the first label (*.example.com)",
            ));
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostMatch::Net(IpNet::from(ip))
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostMatch::Net(net.trunc())
        } else {
            HostMatch::Exact(host.to_ascii_lowercase())
        };
        Ok(HostPattern {
            text: text.to_string(),
            scheme,
            host,
            port,
        })
    }
}

/// Splits `host:port`, leaving bracketed IPv6 and bare IPv6 alone.
fn split_port(s: &str) -> (&str, Option<&str>) {
    if let Some(end) = s.find(']') {
        let (host, rest) = s.split_at(end + 1);
        return (host, rest.strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (s, None),
    }
}

impl HostPattern {
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemeMatch::Http => scheme == "http",
            SchemeMatch::Https => scheme == "https",
            SchemeMatch::Any => true,
        };
        let port_ok = self.port.is_none_or(|p| p == port);
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(name) => name == host,
            HostMatch::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            HostMatch::Net(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        };
        scheme_ok && port_ok && host_ok
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0} is not on the run's HTTP allow-list")]
    NotAllowed(String),
    #[error("{host} resolves to {ip}, a {range} address, which agents may not reach")]
    ForbiddenAddress {
        host: String,
        ip: IpAddr,
        range: &'static str,
    },
}

/// A run's HTTP allow-list.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    patterns: Vec<HostPattern>,
}

impl HttpPolicy {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?;
        Ok(HttpPolicy { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Step one, before any DNS: is `scheme://host:port` on the list?
    pub fn check_url(&self, scheme: &str, host: &str, port: u16) -> Result<(), Denied> {
        let host = normalize_host(host);
        if self.patterns.iter().any(|p| p.matches(scheme, &host, port)) {
            Ok(())
        } else {
            Err(Denied::NotAllowed(format!("{scheme}://{host}:{port}")))
        }
    }

    /// Step two, after DNS: may the request connect to `ip`? Special-purpose
    /// ranges only when an IP/CIDR pattern for this scheme and port names
    /// the address.
    pub fn check_ip(&self, scheme: &str, host: &str, port: u16, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical_ip(ip);
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let named = self.patterns.iter().any(|p| {
            matches!(&p.host, HostMatch::Net(net) if net.contains(&ip))
                && p.matches(scheme, &ip.to_string(), port)
        });
        if named {
            Ok(())
        } else {
            Err(Denied::ForbiddenAddress {
                host: normalize_host(host),
                ip,
                range,
            })
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// IPv4-mapped and NAT64 IPv6 addresses stand for their IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// The special-purpose range `ip` is in, if any.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local (cloud metadata)",
        _ if ip.is_unspecified() || o[0] == 0 => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        [100, b, ..] if (64..128).contains(&b) => "shared (carrier-grade NAT)",
        [192, 0, 0, _] => "IETF protocol assignment",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        x if x & 0xfe00 == 0xfc00 => "unique local (private)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ if s[..6] == [0, 0, 0, 0, 0, 0] => "IPv4-compatible (deprecated)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &[&str]) -> HttpPolicy {
        HttpPolicy::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_hosts_and_default_ports() {
        let p = policy(&["https://api.example.com"]);
        assert!(p.check_url("https", "api.example.com", 443).is_ok());
        assert!(p.check_url("https", "API.example.com.", 443).is_ok());
        assert!(p.check_url("http", "api.example.com", 80).is_err());
        assert!(p.check_url("https", "api.example.com", 8443).is_err());
        assert!(p.check_url("https", "example.com", 443).is_err());
    }

    #[test]
    fn wildcards() {
        let p = policy(&["https://*.example.com", "*://any.test:*"]);
        assert!(p.check_url("https", "a.b.example.com", 443).is_ok());
        assert!(p.check_url("https", "example.com", 443).is_err());
        assert!(p.check_url("https", "badexample.com", 443).is_err());
        assert!(p.check_url("http", "any.test", 1234).is_ok());
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "example.com",
            "ftp://x",
            "https://ex*ample.com",
            "https://x:port",
            "https://x/path",
            "https://",
        ] {
            let e = HostPattern::from_str_checked(bad).unwrap_err();
            assert_eq!(e.pattern, bad);
        }
    }

    #[test]
    fn special_addresses_are_refused_unless_named() {
        let p = policy(&["http://localhost:8080", "http://*"]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check_url("http", "localhost", 8080).is_ok());
        assert!(matches!(
            p.check_ip("http", "localhost", 8080, lo),
            Err(Denied::ForbiddenAddress {
                range: "loopback",
                ..
            })
        ));
        for ip in [
            "169.254.169.254",
            "10.1.2.3",
            "192.168.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "0.0.0.0",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(p.check_ip("http", "h", 80, ip).is_err(), "{ip} allowed");
        }
        assert!(
            p.check_ip("http", "h", 80, "93.184.216.34".parse().unwrap())
                .is_ok()
        );

        let named = policy(&["http://127.0.0.1:8080", "http://10.0.0.0/8:*"]);
        assert!(named.check_url("http", "127.0.0.1", 8080).is_ok());
        assert!(named.check_ip("http", "127.0.0.1", 8080, lo).is_ok());
        assert!(named.check_ip("http", "127.0.0.1", 9090, lo).is_err());
        assert!(
            named
                .check_ip("http", "10.9.9.9", 1, "10.9.9.9".parse().unwrap())
                .is_ok()
        );
    }

    impl HostPattern {
        fn from_str_checked(s: &str) -> Result<Self, PatternError> {
            s.parse()
        }
    }
}
