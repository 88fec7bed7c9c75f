//! Every gRPC message a peer sends the control plane is bounded
//! (`warden_core::wire::MAX_MESSAGE_BYTES`, 80 MiB), on every service that
//! takes large ones: a message one byte over is refused from its length
//! prefix, before it is read into memory, and one of exactly 80 MiB is
//! read and then judged by the control plane's own bounds.

use crate::leases::TestCluster;
use prost::Message;
use tonic::Code;
use warden_core::wire::MAX_MESSAGE_BYTES;
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;
use warden_proto::v1::run_service_client::RunServiceClient;

/// `make(n)` (a message holding `n` filler bytes) encoded to exactly
/// `bytes` bytes.
fn sized<M: Message>(make: impl Fn(usize) -> M, bytes: usize) -> M {
    let guess = bytes - 1024;
    let n = guess + (bytes - make(guess).encoded_len());
    let message = make(n);
    assert_eq!(message.encoded_len(), bytes);
    message
}

#[track_caller]
fn refused_for_its_size(e: &tonic::Status) {
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("the limit is: {MAX_MESSAGE_BYTES} bytes")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_80_mib_is_refused_and_one_of_80_mib_is_read() {
    let (c, _cp) = TestCluster::start(&[]);
    let ch = c.channel().await;

    // A client's submit: the one at the bound is read (and refused for
    // naming no published agent); one byte more is not.
    let submit = |n: usize| pb::SubmitRequest {
        agent: "hello@1".into(),
        input: "x".repeat(n),
        ..Default::default()
    };
    let mut runs = RunServiceClient::new(ch.clone());
    let e = runs
        .submit(sized(submit, MAX_MESSAGE_BYTES + 1))
        .await
        .unwrap_err();
    refused_for_its_size(&e);
    let e = runs
        .submit(sized(submit, MAX_MESSAGE_BYTES))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("hello"), "{e:?}");

    // A node's result: the same (read, then refused for its unknown lease).
    let complete = |n: usize| pb::CompleteRequest {
        lease: Some(pb::LeaseRef {
            run_id: "r-none".into(),
            attempt: 1,
            token: "forged".into(),
        }),
        output: "x".repeat(n),
        usage: None,
    };
    let mut leases = LeaseServiceClient::new(c.enroll("n1").await);
    let e = leases
        .complete(sized(complete, MAX_MESSAGE_BYTES + 1))
        .await
        .unwrap_err();
    refused_for_its_size(&e);
    let answer = leases.complete(sized(complete, MAX_MESSAGE_BYTES)).await;
    if let Err(e) = &answer {
        assert_ne!(e.code(), Code::OutOfRange, "{e:?}");
    }
}
