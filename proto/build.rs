//! Compiles `warden/v1/*.proto` with protox (pure Rust, no protoc needed)
//! and generates tonic clients and servers.

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
    tonic_prost_build::configure()
        .compile_fds(descriptors)
        .expect("code generation succeeds");
}
