//! Warden's gRPC protocol, versioned by path: `proto/warden/v1`. Generated
//! code; edit the `.proto` files, not this crate.

/// `warden.v1`: node, lease, run and registry services.
pub mod v1 {
    #![allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("warden.v1");
}

/// The encoded `FileDescriptorSet` of `warden.v1` (every service, method
/// and message), decodable with `prost_types::FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/warden.v1.descriptors.bin"));
