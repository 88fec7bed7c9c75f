//! The one HTTP pattern language, used by publish-time manifest checks,
//! submit-time grant checks, the node's policy ceiling and the runtime
//! policy in the wasi-http hook: [`HttpPattern`] (one allow-list entry),
//! [`HttpPattern::covers`] (the one meaning of "this pattern admits
//! everything that one does") and [`HttpPolicy`] (a run's list, plus the
//! check of resolved addresses).
//!
//! A pattern is an origin, `scheme://host[:port]`:
//! - the scheme is `http`, `https` or `*`;
//! - the host is a name, `*.domain` (any subdomain, not the domain itself),
//!   `*` (any host), an IP literal or a CIDR block (`10.0.0.0/8`; IPv6 in
//!   brackets: `[::1]`, `[fd00::/8]`);
//! - the port is a number or `*`, and defaults to the scheme's port.
//!
//! No paths, queries or user info: the runtime checks origins only, so a
//! pattern it could not enforce is refused when it is parsed.
//!
//! Addresses in loopback, private, link-local (cloud metadata), shared,
//! multicast and reserved ranges are refused after DNS resolution, whatever
//! the name, unless an IP or CIDR pattern names them literally. So a
//! wildcard host means "public hosts", and only a literal IP/CIDR pattern
//! covers a literal IP/CIDR pattern.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a pattern is refused; shows as `` HTTP pattern `P`: reason ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP pattern `{pattern}`: {reason}")]
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
pub struct HttpPattern {
    text: String,
    scheme: SchemeMatch,
    host: HostMatch,
    /// `None`: any port.
    port: Option<u16>,
}

impl fmt::Display for HttpPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for HttpPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            err(
                "expected scheme://host[:port]: write the scheme, e.g. https://api.example.com, \
                 https://*.example.com (its subdomains), https://* (any public host) or *://*:* \
                 (any scheme and port)",
            )
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemeMatch::Http,
            "https" => SchemeMatch::Https,
            "*" => SchemeMatch::Any,
            _ => return Err(err("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(err("user info is not allowed in an origin pattern"));
        }
        if rest.contains(['?', '#']) {
            return Err(err(
                "queries and fragments are not allowed in an origin pattern",
            ));
        }
        let (host, port) = split_port(rest).map_err(err)?;
        let port = match port {
            None => match scheme {
                SchemeMatch::Http => Some(80),
                SchemeMatch::Https => Some(443),
                SchemeMatch::Any => None,
            },
            Some("*") => None,
            Some(p) if p.contains('/') => {
                return Err(err("paths are not allowed in an origin pattern"));
            }
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(err("the port must be a number (1-65535) or *")),
                Ok(p) => Some(p),
            },
        };
        let host = parse_host(host).map_err(err)?;
        Ok(HttpPattern {
            text: text.to_string(),
            scheme,
            host,
            port,
        })
    }
}

/// Splits `host[:port]`; a bracketed host is an IPv6 address or CIDR.
fn split_port(s: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or("an IPv6 address needs a closing bracket, e.g. [::1]")?;
        return match after {
            "" => Ok((host, None)),
            _ if after.starts_with(':') => Ok((host, Some(&after[1..]))),
            _ if after.starts_with('/') && after[1..].chars().all(|c| c.is_ascii_digit()) => {
                Err("write an IPv6 CIDR block inside the brackets, e.g. [fd00::/8]")
            }
            _ if after.starts_with('/') => Err("paths are not allowed in an origin pattern"),
            _ => Err("expected :port after the bracketed address"),
        };
    }
    match s.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("an IPv6 address goes in brackets, e.g. http://[::1]:8080")
        }
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((s, None)),
    }
}

fn parse_host(host: &str) -> Result<HostMatch, &'static str> {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        // It would parse, and every request would then be refused after
        // DNS (a loopback address): say so now.
        return Err(
            "localhost is a loopback address, which agents reach only when the pattern names \
             the address itself: write e.g. http://127.0.0.1:8080 or http://[::1]:8080",
        );
    }
    if let Some((addr, _)) = host.split_once('/') {
        return if addr.parse::<IpAddr>().is_ok() {
            host.parse::<IpNet>()
                .map(|net| HostMatch::Net(net.trunc()))
                .map_err(|_| "not a CIDR block (e.g. 10.0.0.0/8)")
        } else {
            Err("paths are not allowed in an origin pattern")
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostMatch::Net(IpNet::from(ip)));
    }
    let (name, subdomains) = match host.strip_prefix("*.") {
        Some(suffix) => (suffix, true),
        None => (host, false),
    };
    if name.contains('*') {
        return Err("a wildcard is only allowed as the whole first label (*.example.com)");
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name.split('.').all(valid_label) {
        return Err("the host is not a valid name, IP address or CIDR block");
    }
    Ok(if subdomains {
        HostMatch::Subdomains(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

impl HttpPattern {
    /// Whether a request to `scheme://host:port` is on this entry (the
    /// address check comes after DNS, in [`HttpPolicy::check_ip`]).
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
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

    /// Whether this pattern admits everything `other` admits: the one rule
    /// for manifests against submits and node policies against grants.
    /// A wildcard host covers names only (which reach public addresses
    /// only); an IP or CIDR pattern is covered only by one that names the
    /// same or a wider block literally.
    pub fn covers(&self, other: &HttpPattern) -> bool {
        let scheme = self.scheme == SchemeMatch::Any || self.scheme == other.scheme;
        let port = self.port.is_none() || self.port == other.port;
        let host = match (&self.host, &other.host) {
            (HostMatch::Net(a), HostMatch::Net(b)) => a.contains(b),
            (_, HostMatch::Net(_)) | (HostMatch::Net(_), _) => false,
            (HostMatch::Any, _) => true,
            (HostMatch::Subdomains(s), HostMatch::Subdomains(t)) => t.ends_with(s.as_str()),
            (HostMatch::Subdomains(s), HostMatch::Exact(h)) => h.ends_with(s.as_str()),
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            _ => false,
        };
        scheme && port && host
    }

    /// Whether this entry names `ip` literally (an IP or CIDR pattern).
    fn names(&self, ip: IpAddr) -> bool {
        matches!(&self.host, HostMatch::Net(net) if net.contains(&ip))
    }
}

/// Parses each pattern; the first bad one is the error.
pub fn parse_patterns(patterns: &[String]) -> Result<Vec<HttpPattern>, PatternError> {
    patterns.iter().map(|p| p.parse()).collect()
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
    patterns: Vec<HttpPattern>,
}

impl HttpPolicy {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        Ok(HttpPolicy {
            patterns: parse_patterns(patterns)?,
        })
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
        let named = self
            .patterns
            .iter()
            .any(|p| p.names(ip) && p.matches(scheme, &ip.to_string(), port));
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
mod tests;
