//! The `envoy.service.auth.v3.Authorization` gRPC service, with a codec that decodes only what
//! tollgate reads ([`crate::request`]) and answers every message it cannot decode with a 400.
//!
//! envoy-types' generated `AuthorizationServer` decodes the whole `CheckRequest` with prost, and a
//! message prost rejects (a truncated field, a header that is not UTF-8) becomes a gRPC error,
//! which Envoy turns into its failure mode instead of an answer. Here the codec hands the decode
//! result to the service, so the answer is always a well-formed `CheckResponse`.

use crate::authz::RateLimiter;
use crate::request::CheckRequest;
use crate::store::QuotaStore;
use bytes::Buf;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use prost::{DecodeError, Message};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Body as HttpBody;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

/// The gRPC service name, also used for its health status.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `Authorization/Check` over a [`RateLimiter`].
pub struct AuthorizationService<S> {
    limiter: Arc<RateLimiter<S>>,
}

impl<S> AuthorizationService<S> {
    /// Serves `limiter`.
    pub fn new(limiter: RateLimiter<S>) -> Self {
        Self {
            limiter: Arc::new(limiter),
        }
    }
}

impl<S> Clone for AuthorizationService<S> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<S> NamedService for AuthorizationService<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S, B> Service<http::Request<B>> for AuthorizationService<S>
where
    S: QuotaStore,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            let status = Status::unimplemented(format!("{SERVICE_NAME} has only Check"));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let check = Check(self.limiter.clone());
        Box::pin(async move { Ok(Grpc::new(CheckCodec).unary(check, request).await) })
    }
}

/// The unary `Check` call.
struct Check<S>(Arc<RateLimiter<S>>);

impl<S: QuotaStore> UnaryService<Result<CheckRequest, DecodeError>> for Check<S> {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, Status>;

    fn call(&mut self, request: tonic::Request<Result<CheckRequest, DecodeError>>) -> Self::Future {
        let limiter = self.0.clone();
        Box::pin(async move {
            let answer = limiter.respond(request.get_ref().as_ref()).await;
            Ok(tonic::Response::new(answer))
        })
    }
}

/// Encodes `CheckResponse`s; decodes `CheckRequest`s into tollgate's subset, passing decode
/// errors on to the service instead of failing the call.
#[derive(Debug, Clone, Copy)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = Result<CheckRequest, DecodeError>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for CheckCodec {
    type Item = CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: CheckResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode the CheckResponse: {e}")))
    }
}

impl Decoder for CheckCodec {
    type Item = Result<CheckRequest, DecodeError>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // One `Bytes` for the whole message (no copy): the fields kept are slices of it.
        let message = buf.copy_to_bytes(buf.remaining());
        Ok(Some(CheckRequest::decode(message)))
    }
}
