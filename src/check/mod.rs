//! The ext_authz check path: a `CheckRequest` in, a `CheckResponse` out, in this order.

pub mod admission;
pub mod service;

pub mod request;

pub mod authz;
pub mod deny_cache;

pub mod metadata;
pub mod report;
pub mod response;
pub mod verdict;
pub mod wire;
