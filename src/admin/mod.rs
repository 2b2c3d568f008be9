//! tollgate's own gRPC API for operators (`tollgate.admin.v1.Admin`, `proto/`): read and reset one
//! API key's quota on one route, list the route table.
//!
//! This module is the API's meaning, with no transport: [`service`] answers the calls through the
//! same [`RateLimiter`](crate::check::authz::RateLimiter) that checks use, so a request names the
//! same bucket in both; [`auth`] asks for the optional bearer token. The server serves it on a
//! listener of its own (`admin.listen`, loopback by default), never on the ext_authz port, which
//! mesh workloads reach and on which they could reset their own quotas; the `tollgate admin`
//! command is its client (`cli::admin`).

pub mod auth;
pub mod service;

/// The code generated from `proto/tollgate/admin/v1/admin.proto` by `build.rs`.
pub mod pb {
    // The generated client and server have undocumented items of their own (constructors,
    // modules); every message, field and method carries the proto's comments.
    #![allow(missing_docs)]
    tonic::include_proto!("tollgate.admin.v1");

    /// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");
}
