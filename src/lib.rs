//! tollgate: API rate limits for an Envoy or Istio mesh, over Envoy's `ext_authz` gRPC protocol.
//!
//! The crate is laid out as the flow of a check:
//! - [`check`]: the ext_authz check path. [`check::service`] reads the gRPC call,
//!   [`check::request`] reads method, path and API key off the wire, [`check::path`] normalises
//!   the path and [`check::routes`] finds its bucket, [`check::authz`] asks the store (unless
//!   [`check::deny_cache`] already knows the bucket is full) and turns the outcome into a
//!   [`check::verdict::Verdict`], which [`check::response`] renders as a `CheckResponse` whose
//!   header mutations make Envoy send `X-RateLimit-*` and `Retry-After`.
//! - [`store`]: the quota store, one atomic sliding-window check per request, in Redis (with its
//!   connections, circuit breakers and cluster routing) or in memory.
//! - [`config`]: YAML parsed and validated into typed settings, every problem reported at once.
//! - [`telemetry`]: Prometheus metrics, counted on the check path into handles resolved once per
//!   route table, and served on their own HTTP listener.
//! - [`admin`]: tollgate's own gRPC API on its own listener (`proto/`, compiled by `build.rs`):
//!   read and reset a key's quota, list the routes; `tollgate admin` is its client.
//! - [`server`] binds the listeners and wires the gRPC services (ext_authz and `grpc.health.v1`,
//!   the admin API, the metrics endpoint) and the bounded shutdown (drain, grace, close);
//!   [`shutdown`] waits for signals; [`cli`] holds the command line.
//! - Shared types: [`api_key`] (digests, never the raw key), [`limit`], [`clock`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api_key;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod limit;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
