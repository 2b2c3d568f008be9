//! tollgate: API rate limits for an Envoy or Istio mesh, over Envoy's `ext_authz` gRPC protocol.
//!
//! For each `CheckRequest` the flow is:
//! 1. [`request`] reads method, path and API key out of the request attributes;
//! 2. [`path`] normalises the path and [`routes`] finds its bucket (a declared route, the default
//!    bucket, or none outside the prefix);
//! 3. [`store`] runs one atomic sliding-window check for (key digest, bucket) in Redis or memory,
//!    unless [`deny_cache`] already knows the bucket is full until a later moment;
//! 4. [`authz`] turns the outcome (or a failure) into a [`verdict::Verdict`], which [`response`]
//!    renders as a `CheckResponse` whose header mutations make Envoy send `X-RateLimit-*` and
//!    `Retry-After`.
//!
//! [`service`] is the ext_authz gRPC service and its codec, [`config`] parses and validates the
//! YAML configuration, [`server`] wires the gRPC services (ext_authz and `grpc.health.v1`) and the
//! bounded shutdown (drain, grace, close), [`shutdown`] waits for signals.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api_key;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deny_cache;
pub mod limit;
pub mod path;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod verdict;
