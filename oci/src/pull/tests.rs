//! Unit tests of the registry client: challenges, digests in paths, the
//! guard's resolver and hop check, and its redirect policy over real
//! sockets.

use super::*;

#[test]
fn challenges_are_read_from_any_spelling() {
    assert_eq!(
        parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#
        ),
        Some(Challenge::Bearer {
            realm: "https://auth.example.com/token".into(),
            service: Some("registry.example.com".into())
        })
    );
    assert_eq!(
        parse_challenge("bearer realm=http://127.0.0.2:9/token"),
        Some(Challenge::Bearer {
            realm: "http://127.0.0.2:9/token".into(),
            service: None
        })
    );
    assert_eq!(
        parse_challenge(r#"Basic realm="test""#),
        Some(Challenge::Basic)
    );
    assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
    assert_eq!(parse_challenge("Negotiate"), None);
}

#[test]
fn only_sha256_digests_go_into_blob_paths() {
    assert!(is_sha256_digest(&format!("sha256:{}", "a1".repeat(32))));
    for bad in [
        "sha256:../../x".to_string(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha512:{}", "a".repeat(64)),
        "sha256:".to_string(),
    ] {
        assert!(!is_sha256_digest(&bad), "{bad}");
    }
}

/// Names resolve through the guard: a host that is not allow-listed
/// keeps only its public addresses (none here: `localhost` is
/// loopback), and the error names what it resolved to.
#[tokio::test]
async fn the_guard_s_resolver_drops_special_addresses_unless_listed() {
    use reqwest::dns::Resolve;
    let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
    let open = GuardedResolver(RegistryGuard::default());
    let e = open.resolve(name("localhost")).await.err().unwrap();
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(e.to_string().contains("--allow-registry localhost"), "{e}");
    let listed = GuardedResolver(RegistryGuard {
        allow: vec!["localhost:5000".into()],
    });
    let addrs: Vec<_> = listed.resolve(name("localhost")).await.unwrap().collect();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
}

#[test]
fn guarded_hops_pass_the_allow_list_and_the_address_check() {
    let url = |u: &str| reqwest::Url::parse(u).unwrap();
    let listed = RegistryGuard {
        allow: vec!["127.0.0.1:5000".into(), "cdn.example.com".into()],
    };
    assert!(listed.check_hop(&url("http://127.0.0.1:5000/v2/")).is_ok());
    assert!(
        listed
            .check_hop(&url("https://cdn.example.com/blob"))
            .is_ok()
    );
    for refused in [
        "http://127.0.0.2:5000/token",
        "http://127.0.0.1:5001/",
        "https://evil.example.com/",
    ] {
        let e = listed.check_hop(&url(refused)).unwrap_err();
        assert!(
            e.contains("not one this control plane may"),
            "{refused}: {e}"
        );
    }
    let public = RegistryGuard::default();
    assert!(
        public
            .check_hop(&url("https://registry.example.com/"))
            .is_ok()
    );
    for refused in [
        "http://127.0.0.2:5000/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let e = public.check_hop(&url(refused)).unwrap_err();
        assert!(e.contains("address"), "{refused}: {e}");
    }
}

/// An HTTPS server on 127.0.0.1, with a certificate only the returned one
/// trusts, that redirects `/down` to `down`, `/up` to its own `/end`, and
/// answers `/end` with `end`.
async fn https_redirector(down: String) -> (u16, reqwest::Certificate) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, down) = (acceptor.clone(), down.clone());
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await?;
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tls.read(&mut byte).await? == 0 {
                        return Ok(());
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or_default();
                let answer = match path {
                    "/down" => format!("HTTP/1.1 302 Found\r\nlocation: {down}\r\n"),
                    "/up" => {
                        format!("HTTP/1.1 302 Found\r\nlocation: https://127.0.0.1:{port}/end\r\n")
                    }
                    _ => "HTTP/1.1 200 OK\r\n".to_string(),
                };
                let body = if path == "/end" { "end" } else { "" };
                let answer = format!(
                    "{answer}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(answer.as_bytes()).await?;
                tls.shutdown().await
            });
        }
    });
    (
        port,
        reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap(),
    )
}

/// A guarded client never follows a redirect from HTTPS down to plain HTTP
/// (a network attacker could read or change what comes back), even to a
/// host the operator allowed: the plain listener sees no connection. An
/// HTTPS redirect is followed, and a registry reached over plain HTTP
/// anyway (`plain_http`: loopback or `--insecure`) may redirect to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_https_to_plain_http_is_refused_without_a_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = plain.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                // The request first: an answer before it is a protocol error.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain",
                    )
                    .await;
            }
        });
    }
    let (port, cert) = https_redirector(format!("http://{plain_addr}/blob")).await;
    // Both hosts are allowed: only the downgrade is refused.
    let guard = RegistryGuard {
        allow: vec![format!("127.0.0.1:{port}"), plain_addr.to_string()],
    };
    let client = |plain_http| {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(cert.clone())
            .redirect(guarded_redirects(guard.clone(), plain_http))
            .build()
            .unwrap()
    };
    let base = format!("https://127.0.0.1:{port}");

    let up = client(false)
        .get(format!("{base}/up"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.text().await.unwrap(), "end");

    let e = client(false)
        .get(format!("{base}/down"))
        .send()
        .await
        .unwrap_err();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    let mut refused = None;
    while let Some(err) = source {
        if let Some(Refused(message)) = err.downcast_ref::<Refused>() {
            refused = Some(message.clone());
        }
        source = err.source();
    }
    let refused = refused.unwrap_or_else(|| panic!("not refused by the policy: {e:?}"));
    assert!(refused.contains("from HTTPS to plain HTTP"), "{refused}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the plain host was contacted"
    );

    let down = client(true)
        .get(format!("{base}/down"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.text().await.unwrap(), "plain");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}
