//! Compiles `warden/v1/*.proto` with protox (pure Rust, no protoc needed)
//! and generates tonic clients and servers, and keeps the file descriptor
//! set.

fn main() {
    let files = [
        "warden/v1/common.proto",
        "warden/v1/node.proto",
        "warden/v1/lease.proto",
        "warden/v1/run.proto",
        "warden/v1/registry.proto",
        "warden/v1/auth.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."]).expect("the .proto files compile");
    // The descriptors themselves, for whoever needs the list of methods
    // (the authorization table's test, reflection).
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("warden.v1.descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )
    .expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .compile_fds(descriptors)
        .expect("code generation succeeds");
}
