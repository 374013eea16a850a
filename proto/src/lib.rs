//! The Sluice gRPC API, generated from `proto/sluice/ingester/v1/*.proto`.
//!
//! Routers use [`v1::write_service_client`], queriers the Arrow Flight
//! service with a [`v1::QueryRequest`] ticket, the operator
//! [`v1::control_service_client`].

/// `sluice.ingester.v1`
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sluice.ingester.v1");
}

/// The encoded `FileDescriptorSet` of the Sluice protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));
