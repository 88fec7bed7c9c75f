//! The size a registry declares for a component's layer is its word only:
//! a layer declared over 256 MiB (`warden_oci::MAX_COMPONENT_BYTES`) is
//! refused before it is downloaded, and one that turns out longer than
//! declared is refused while it downloads, past the declared size.

use crate::leases::TestCluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use warden_tests::examples;
use warden_tests::http_server::TestServer;
use warden_tests::oci_registry::{blob_response, manifest_response, wasm_artifact_declaring};

/// `warden_oci::MAX_COMPONENT_BYTES`.
const MAX_LAYER_BYTES: u64 = 256 << 20;

#[test]
fn a_layer_declared_over_256_mib_or_longer_than_declared_is_refused() {
    let component = std::fs::read(examples::HELLO).unwrap();
    let most = MAX_LAYER_BYTES;
    let (huge, _) = wasm_artifact_declaring(&component, most + 1);
    let declared = component.len() as u64 - 1;
    let (short, _) = wasm_artifact_declaring(&component, declared);
    let huge_blobs = Arc::new(AtomicUsize::new(0));
    let registry = {
        let huge_blobs = huge_blobs.clone();
        TestServer::start(move |req| {
            let huge_repo = req.path.split('/').nth(2) == Some("huge");
            if req.path.contains("/manifests/") {
                return manifest_response(if huge_repo { &huge } else { &short });
            }
            if huge_repo {
                huge_blobs.fetch_add(1, Ordering::SeqCst);
            }
            blob_response(&component)
        })
    };
    let host = registry.addr().to_string();
    // The control plane's own bound (--max-component) above the layer
    // bound, so that the registry client's is the one tested.
    let (c, _cp) = TestCluster::start(&["--allow-registry", &host, "--max-component", "1GiB"]);
    let submit = |repo: &str| {
        let out = c.cli(&[
            "submit",
            &format!("oci://{host}/{repo}/hello:1"),
            "--input",
            "{}",
        ]);
        assert!(!out.status.success(), "{repo}: submitted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let err = submit("huge");
    assert!(
        err.contains(&format!(
            "its layer is {} bytes, more than the limit of {most}",
            most + 1
        )),
        "{err}"
    );
    assert_eq!(
        huge_blobs.load(Ordering::SeqCst),
        0,
        "the huge layer was downloaded"
    );

    let err = submit("short");
    assert!(
        err.contains(&format!(
            "the layer is larger than the {declared} bytes declared"
        )),
        "{err}"
    );
}
