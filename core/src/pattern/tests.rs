//! Table-driven tests of the pattern language: parsing, matching and
//! covering. Publish, submit, node policy and the runtime all call the code
//! under test here, so these tables hold for each of them.

use super::*;

fn p(text: &str) -> HttpPattern {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

#[test]
fn valid_patterns_parse() {
    for text in [
        "https://api.example.com",
        "https://api.example.com/",
        "HTTPS://API.Example.COM",
        "http://api.example.com:8080",
        "*://*:*",
        "http://*",
        "https://*",
        "https://*.example.com",
        "http://127.0.0.1:8080",
        "http://10.0.0.0/8:*",
        "http://10.1.2.3/8",
        "http://[::1]:8080",
        "http://[fd00::/8]:*",
        "https://[2001:db8::1]",
        "http://under_score.internal:1",
    ] {
        p(text);
    }
}

#[test]
fn invalid_patterns_name_the_problem() {
    let table = [
        ("example.com", "expected scheme://host[:port]"),
        (
            "*.example.com",
            "write the scheme, e.g. https://api.example.com",
        ),
        ("*", "https://* (any public host)"),
        ("http://localhost:8080", "write e.g. http://127.0.0.1:8080"),
        ("https://api.localhost", "localhost is a loopback address"),
        ("ftp://x", "the scheme must be http, https or *"),
        (
            "https://api.example.com/v1",
            "paths are not allowed in an origin pattern",
        ),
        (
            "https://api.example.com:443/v1",
            "paths are not allowed in an origin pattern",
        ),
        (
            "https://*.example.com/a/b",
            "paths are not allowed in an origin pattern",
        ),
        ("https://x?q=1", "queries and fragments are not allowed"),
        ("https://user:pw@x", "user info is not allowed"),
        ("https://ex*ample.com", "a wildcard is only allowed"),
        ("https://*.*.example.com", "a wildcard is only allowed"),
        ("https://x:port", "the port must be a number"),
        ("https://x:0", "the port must be a number"),
        ("https://x:70000", "the port must be a number"),
        ("https://", "the host is empty"),
        ("https://:443", "the host is empty"),
        ("http://10.0.0.0/33", "not a CIDR block"),
        ("http://::1", "an IPv6 address goes in brackets"),
        ("http://[::1", "closing bracket"),
        ("http://[fd00::]/8", "inside the brackets"),
        ("http://[::1]x", "expected :port"),
        ("http://exa mple.com", "not a valid name"),
        ("http://a..b", "not a valid name"),
    ];
    for (text, reason) in table {
        let e = text.parse::<HttpPattern>().unwrap_err();
        assert_eq!(e.pattern, text);
        assert!(
            e.reason.contains(reason),
            "{text}: got `{}`, want `{reason}`",
            e.reason
        );
        assert!(e.to_string().contains(text), "{e}");
    }
}

#[test]
fn matching_a_request() {
    // (pattern, scheme, host, port, allowed)
    let table = [
        (
            "https://api.example.com",
            "https",
            "api.example.com",
            443,
            true,
        ),
        (
            "https://api.example.com",
            "http",
            "api.example.com",
            80,
            false,
        ),
        (
            "https://api.example.com",
            "https",
            "api.example.com",
            8443,
            false,
        ),
        (
            "https://api.example.com",
            "https",
            "example.com",
            443,
            false,
        ),
        (
            "https://*.example.com",
            "https",
            "a.b.example.com",
            443,
            true,
        ),
        ("https://*.example.com", "https", "example.com", 443, false),
        (
            "https://*.example.com",
            "https",
            "badexample.com",
            443,
            false,
        ),
        ("*://any.test:*", "http", "any.test", 1234, true),
        ("http://10.0.0.0/8:*", "http", "10.9.9.9", 1, true),
        ("http://10.0.0.0/8:*", "http", "11.0.0.1", 1, false),
        ("http://[::1]:8080", "http", "::1", 8080, true),
        ("http://[fd00::/8]:*", "http", "fd12::1", 9, true),
    ];
    for (pattern, scheme, host, port, allowed) in table {
        assert_eq!(
            p(pattern).matches(scheme, host, port),
            allowed,
            "{pattern} vs {scheme}://{host}:{port}"
        );
    }
    let policy = HttpPolicy::new(&["https://api.example.com".to_string()]).unwrap();
    assert!(policy.check_url("https", "API.example.com.", 443).is_ok());
}

#[test]
fn covering_is_one_rule() {
    // (policy or manifest, grant or ask, covered)
    let table = [
        ("*://*:*", "https://api.example.com", true),
        ("*://*:*", "http://intranet.internal:8080", true),
        ("*://*:*", "*://*:*", true),
        // A wildcard host means public names; it never covers an address.
        ("*://*:*", "http://127.0.0.1:8080", false),
        ("*://*:*", "http://0.0.0.0/0:*", false),
        ("*://*:*", "http://[::1]:80", false),
        ("http://*", "http://10.0.0.0/8", false),
        // Addresses are covered by the same or a wider block, literally.
        ("http://0.0.0.0/0:*", "http://127.0.0.1:8080", true),
        ("http://10.0.0.0/8:*", "http://10.1.0.0/16:80", true),
        ("http://10.1.0.0/16:*", "http://10.0.0.0/8:*", false),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", true),
        ("http://127.0.0.1:8080", "http://127.0.0.1:9090", false),
        ("http://[fd00::/8]:*", "http://[fd12::1]:80", true),
        ("http://10.0.0.0/8:*", "http://internal.example:80", false),
        // Names.
        ("https://*.example.com", "https://api.example.com", true),
        ("https://*.example.com", "https://api.example.com:443", true),
        ("https://*.example.com", "https://*.api.example.com", true),
        ("https://*.example.com", "https://*.example.com", true),
        ("https://*.example.com", "https://example.com", false),
        (
            "https://*.example.com",
            "https://example.com.evil.net",
            false,
        ),
        ("https://*.example.com", "http://api.example.com", false),
        (
            "https://api.example.com",
            "https://api.example.com:8443",
            false,
        ),
        ("https://a.example.com", "https://b.example.com", false),
        ("https://a.example.com", "*://*:*", false),
        ("https://a.example.com", "https://*.example.com", false),
        ("http://a.test:*", "http://a.test:81", true),
        ("http://a.test:81", "http://a.test:*", false),
    ];
    for (outer, inner, covered) in table {
        assert_eq!(p(outer).covers(&p(inner)), covered, "{outer} ⊇ {inner}");
    }
}

#[test]
fn special_addresses_are_refused_unless_named() {
    let policy = |list: &[&str]| {
        HttpPolicy::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    };
    // A name allowed by the list that resolves to loopback is refused.
    let p = policy(&["http://printer.internal:8080", "http://*"]);
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(p.check_url("http", "printer.internal", 8080).is_ok());
    assert!(matches!(
        p.check_ip("http", "printer.internal", 8080, lo),
        Err(Denied::ForbiddenAddress {
            range: "loopback",
            ..
        })
    ));
    for ip in [
        "169.254.169.254",
        "10.1.2.3",
        "192.168.0.1",
        "100.64.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "fd00:ec2::254",
        "fe80::1",
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
    let v6 = policy(&["http://[::1]:8080"]);
    assert!(
        v6.check_ip("http", "::1", 8080, "::1".parse().unwrap())
            .is_ok()
    );
}
