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
