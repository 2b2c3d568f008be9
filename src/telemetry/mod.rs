//! What tollgate tells its operators besides log lines: Prometheus metrics ([`metrics`]) on a
//! listener of their own ([`http`]), and traces of checks exported over OTLP ([`traces`]). Logs carry events (a store that starts failing, a breaker
//! that opens); metrics carry rates and sizes.

pub mod http;
pub mod metrics;
pub mod throttle;
pub mod traces;
