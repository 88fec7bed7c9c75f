//! The compile cache: warm loads come from disk; a damaged entry is
//! rebuilt, never loaded.

use warden_host::LoadSource;
use warden_host::engine::Quiet;
use warden_tests::{examples, sandbox};

#[test]
fn second_load_is_warm_and_a_flipped_byte_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(examples::HELLO).unwrap();
    let load = |sb: &warden_host::Sandbox| sb.engine().load("hello", &bytes, &Quiet).unwrap().1;

    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Compiled);
    // A new engine (as in a new process) finds the artifact on disk.
    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Cache);

    let artifact = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact was written");
    let mut data = std::fs::read(&artifact).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
    std::fs::write(&artifact, &data).unwrap();

    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Compiled);
    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Cache);

    // A truncated artifact is rebuilt too.
    std::fs::write(&artifact, &data[..middle]).unwrap();
    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Compiled);
}

/// A node finds a component it compiled before by digest alone; a digest
/// that is not a sha256 in hex names no file, however it is spelled.
#[test]
fn a_node_finds_a_compiled_component_by_digest_and_nothing_else_names_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(examples::HELLO).unwrap();
    let digest = warden_host::cache::sha256_hex(&bytes);
    let sb = sandbox(dir.path(), None);
    assert!(sb.engine().load_cached("hello", &digest).unwrap().is_none());
    sb.engine().load("hello", &bytes, &Quiet).unwrap();
    let found = sandbox(dir.path(), None)
        .engine()
        .load_cached("hello", &digest)
        .unwrap()
        .expect("in the cache");
    assert_eq!(found.digest, digest);

    // A real entry (artifact and MAC) copied to where a traversing name
    // would point is not read.
    for entry in std::fs::read_dir(dir.path().join("cache")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if let Some(rest) = name.strip_prefix(&format!("{digest}-")) {
            std::fs::copy(&path, dir.path().join(format!("x-{rest}"))).unwrap();
        }
    }
    let upper = digest.to_uppercase();
    for bad in ["../x", "", &upper, &digest[..63]] {
        assert!(
            sb.engine().load_cached("hello", bad).unwrap().is_none(),
            "{bad:?} found something"
        );
    }
    let cache = warden_host::cache::ComponentCache::new(
        dir.path().join("other"),
        &wasmtime::Engine::default(),
        1 << 30,
        "",
    )
    .unwrap();
    let refused = cache.store_artifact("../escape", b"bytes").unwrap_err();
    assert!(refused.to_string().contains("not a sha256"), "{refused}");
    assert!(!dir.path().join("escape").exists());
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn eviction_keeps_the_cache_under_its_bound() {
    let agents = [
        examples::HELLO,
        examples::KV_COUNTER,
        examples::RESEARCH_AGENT,
    ];
    // Each artifact's size, from an unbounded cache.
    let sizing = tempfile::tempdir().unwrap();
    let sb = sandbox(sizing.path(), None);
    let mut largest = 0;
    for path in agents {
        let before = dir_bytes(&sizing.path().join("cache"));
        let bytes = std::fs::read(path).unwrap();
        sb.engine().load(path, &bytes, &Quiet).unwrap();
        largest = largest.max(dir_bytes(&sizing.path().join("cache")) - before);
    }

    let bound = largest * 3 / 2;
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| c.engine.cache_max_bytes = bound);
    let cache = dir.path().join("cache");
    for path in agents.iter().chain(&agents) {
        let bytes = std::fs::read(path).unwrap();
        sb.engine().load(path, &bytes, &Quiet).unwrap();
        let held = dir_bytes(&cache);
        assert!(held <= bound, "{held} bytes in a cache bounded at {bound}");
    }
    // The most recent entry survives; older ones were evicted to make room.
    let research = std::fs::read(examples::RESEARCH_AGENT).unwrap();
    let fresh = warden_tests::sandbox_with(dir.path(), |c| c.engine.cache_max_bytes = bound);
    assert_eq!(
        fresh.engine().load("r", &research, &Quiet).unwrap().1,
        LoadSource::Cache
    );
    let hello = std::fs::read(examples::HELLO).unwrap();
    assert_eq!(
        fresh.engine().load("h", &hello, &Quiet).unwrap().1,
        LoadSource::Compiled
    );
}

#[test]
fn an_artifact_not_written_by_this_node_is_rejected_deleted_and_rebuilt() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(examples::HELLO).unwrap();
    let load = |sb: &warden_host::Sandbox| sb.engine().load("hello", &bytes, &Quiet).unwrap().1;
    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Compiled);

    // The key is the node's own, readable by its user only.
    let key = warden_host::cache::ComponentCache::key_path(&dir.path().join("cache"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);

    // An attacker alters the artifact and rewrites its sidecar with a
    // checksum of the new bytes (all a plain checksum would ask).
    let files: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let artifact = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let sidecar = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "mac"))
        .unwrap();
    let mut data = std::fs::read(artifact).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x01;
    std::fs::write(artifact, &data).unwrap();
    std::fs::write(sidecar, hex_of(&sha2::Sha256::digest(&data))).unwrap();

    assert_eq!(
        load(&sandbox(dir.path(), None)),
        LoadSource::Compiled,
        "the altered artifact was loaded"
    );
    assert_ne!(
        std::fs::read(artifact).unwrap(),
        data,
        "the altered artifact was kept"
    );
    assert_eq!(load(&sandbox(dir.path(), None)), LoadSource::Cache);

    // A cache from another data dir (another key) is not trusted either.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("cache")).unwrap();
    for f in &files {
        std::fs::copy(f, other.path().join("cache").join(f.file_name().unwrap())).unwrap();
    }
    assert_eq!(load(&sandbox(other.path(), None)), LoadSource::Compiled);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
