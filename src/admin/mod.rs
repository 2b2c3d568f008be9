//! tollgate's own gRPC API for operators (`tollgate.admin.v1.Admin`, `proto/`): read and reset one
//! API key's quota on one route, list the route table.
//!
//! It is served on its own listener (`admin.listen`, loopback by default), never on the ext_authz
//! port, which mesh workloads reach and on which they could reset their own quotas. [`service`]
//! answers the calls through the same [`RateLimiter`] that checks use, so a request names the same
//! bucket in both; [`auth`] asks for the optional bearer token; [`client`] is the `tollgate admin`
//! command. gRPC server reflection lets `grpcurl` call it without the proto file.

pub mod auth;
pub mod client;
pub mod service;

pub use auth::AdminToken;

use crate::check::authz::RateLimiter;
use crate::server::Accepted;
use crate::store::QuotaStore;
use auth::BearerAuth;
use service::AdminService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

/// The code generated from `proto/tollgate/admin/v1/admin.proto` by `build.rs`.
pub mod pb {
    // The generated client and server have undocumented items of their own (constructors,
    // modules); every message, field and method carries the proto's comments.
    #![allow(missing_docs)]
    tonic::include_proto!("tollgate.admin.v1");

    /// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");
}

/// Where the admin API listens and what it asks of callers.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Address of the admin listener; loopback by default.
    pub listen: SocketAddr,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
}

/// Serves the admin API and reflection on `listener` until `stop` resolves, then lets the calls
/// in flight finish; connections still open when `closing` turns true are closed.
pub(crate) async fn serve<S: QuotaStore>(
    listener: TcpListener,
    limiter: Arc<RateLimiter<S>>,
    settings: &AdminSettings,
    stop: impl Future<Output = ()> + Send,
    closing: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    if !settings.listen.ip().is_loopback() && settings.token.is_none() {
        tracing::warn!(admin = %settings.listen, "the admin API listens beyond loopback without admin.token_file: anyone who reaches it can reset quotas");
    }
    let auth = BearerAuth::new(settings.token.clone());
    // Both versions of the reflection protocol: older grpcurl releases speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_alpha) =
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => (Some(v1), Some(v1alpha)),
            (Err(e), _) | (_, Err(e)) => {
                // The descriptor set is compiled in; only a broken build could fail here.
                tracing::error!(error = %e, "gRPC reflection is unavailable on the admin listener");
                (None, None)
            }
        };
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|stream| Accepted::new(stream, closing.clone(), None)));
    let admin =
        pb::admin_server::AdminServer::with_interceptor(AdminService::new(limiter), auth.clone());
    tonic::transport::Server::builder()
        .add_service(admin)
        .add_optional_service(reflection.map(|r| InterceptedService::new(r, auth.clone())))
        .add_optional_service(reflection_alpha.map(|r| InterceptedService::new(r, auth)))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}
