//! Client tokens beyond who may call what: a token goes over plaintext
//! only when asked, and each is rate limited with its streams bounded.

use crate::security::{Secure, stderr};
use crate::warden;
use std::time::Duration;
use tonic::Code;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;
use warden_tests::cluster::with_token;
use warden_tests::examples;

/// A token's calls are rate limited and its open watches bounded, each
/// with RESOURCE_EXHAUSTED, and both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rate_limited_and_its_streams_bounded() {
    let cp = Secure::start_with(&["--rate-limit", "5", "--max-streams-per-token", "2"]);
    let channel = cp.channel(None).await;
    let mut auth = warden_proto::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let (mut ok, mut limited) = (0, 0);
    let burst = std::time::Instant::now();
    for _ in 0..30 {
        match auth
            .who_am_i(with_token(pb::WhoAmIRequest {}, &cp.admin))
            .await
        {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    // The burst (10) and what refilled meanwhile (5 a second), no more.
    let refilled = (burst.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(ok >= 10 && ok <= 10 + refilled, "{ok} went through");
    assert!(limited >= 1 && ok + limited == 30, "{limited} were limited");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    auth.who_am_i(with_token(pb::WhoAmIRequest {}, &cp.admin))
        .await
        .expect("the bucket refills");

    // Two watches at once, not three; closing one frees its slot.
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let run = cp.secret(&cp.admin, &["submit", "hello@1.0.0", "--input", "{}"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut runs = RunServiceClient::new(channel.clone());
    let watch = || {
        with_token(
            pb::WatchRunRequest {
                run_id: run.clone(),
            },
            &cp.admin,
        )
    };
    let first = runs.watch(watch()).await.unwrap();
    let _second = runs.watch(watch()).await.unwrap();
    let third = runs.watch(watch()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    drop(first);
    // The slot frees once the server sees the stream cancelled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match runs.watch(watch()).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "no slot freed: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// The CLI sends a token in plaintext only to this machine (`warden dev`,
/// `--insecure` control planes on loopback) unless told to: an http:// URL
/// elsewhere (127.0.0.2 stands for another host) is refused before any
/// connection, naming `--insecure`; with it, the CLI connects.
#[test]
fn a_token_goes_in_plaintext_only_when_asked() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                // Accepted and closed at once: not a control plane.
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let tmp = tempfile::tempdir().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec![
            "runs",
            "list",
            "--control-plane",
            &url,
            "--token",
            "wt_secret",
        ];
        args.extend(extra);
        warden(tmp.path(), &args)
    };
    let out = list(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("plaintext") && err.contains("--insecure") && err.contains("https://"),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the token was sent");
    // Without a token there is nothing to leak; with --insecure it is the
    // user's choice.
    for extra in [&["--insecure"][..], &[]] {
        let args: Vec<&str> = if extra.is_empty() {
            vec!["runs", "list", "--control-plane", &url]
        } else {
            vec![
                "runs",
                "list",
                "--control-plane",
                &url,
                "--token",
                "wt_secret",
                "--insecure",
            ]
        };
        let before = accepted.load(Ordering::SeqCst);
        let out = warden(tmp.path(), &args);
        assert!(!out.status.success(), "not a control plane: {out:?}");
        assert!(
            accepted.load(Ordering::SeqCst) > before,
            "{args:?} did not connect"
        );
    }
}
