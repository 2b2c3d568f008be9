//! tollgate: API rate limits for an Envoy or Istio mesh, over Envoy's `ext_authz` gRPC protocol.
//!
//! The modules, from the top layer down; each uses only its own layer and those below it
//! (`docs/architecture.md`, held by `tests/architecture.rs`):
//! - [`cli`]: the binary's command line, and the `tollgate admin` client.
//! - [`server`]: every socket, task and signal, and their order: the ext_authz listener and what
//!   it admits, the admin and metrics listeners, health, the plan refresh, the configuration
//!   watcher, drain and grace.
//! - [`admin`]: tollgate's own gRPC API for operators (`proto/`, compiled by `build.rs`): read,
//!   reset and plan a key's quota, list the routes.
//! - [`check`]: one `CheckRequest` in, one `CheckResponse` out. [`check::service`] reads the gRPC
//!   call within the budgets of [`check::admission`], [`check::request`] reads method, path and
//!   API key off the wire, [`check::authz`] finds the bucket and asks the store (unless
//!   [`check::deny_cache`] already knows the bucket is full), and [`check::response`] renders the
//!   [`check::verdict::Verdict`] as header mutations that make Envoy send `X-RateLimit-*` and
//!   `Retry-After`, with the decision as dynamic metadata for Envoy's access log
//!   ([`check::metadata`]).
//! - [`telemetry`]: Prometheus metrics, counted into handles resolved once per route table, and
//!   their HTTP endpoint.
//! - [`store`]: the quota store, one atomic sliding-window check per request, in Redis
//!   (connections, circuit breakers, cluster routing, versions, readiness) or in memory.
//! - [`config`]: YAML parsed and validated into typed settings, every problem reported at once.
//! - [`policy`]: the vocabulary of limits, windows, path normalisation and route tables.
//! - Leaf types: [`api_key`] (as a check reads it; digests, never the raw key), [`clock`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api_key;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod policy;
pub mod server;
pub mod store;
pub mod telemetry;
