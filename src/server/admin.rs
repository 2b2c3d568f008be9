//! The admin API's listener: tollgate's own gRPC API ([`crate::admin`]) and reflection, with the
//! optional bearer token, on `admin.listen`, never on the ext_authz port.

use super::accept::BoundedConnection;
use crate::admin::auth::BearerAuth;
use crate::admin::pb;
use crate::admin::service::AdminService;
use crate::check::authz::RateLimiter;
use crate::config::AdminSettings;
use crate::store::QuotaStore;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

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
        .map(move |accepted| {
            accepted.map(|stream| BoundedConnection::new(stream, closing.clone(), None))
        });
    let admin =
        pb::admin_server::AdminServer::with_interceptor(AdminService::new(limiter), auth.clone());
    tonic::transport::Server::builder()
        .add_service(admin)
        .add_optional_service(reflection.map(|r| InterceptedService::new(r, auth.clone())))
        .add_optional_service(reflection_alpha.map(|r| InterceptedService::new(r, auth)))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}
