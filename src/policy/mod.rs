//! The vocabulary of rate-limit policy, pure and free of I/O: limits, windows and rules
//! ([`limit`]), path normalisation ([`path`]), route templates and tables ([`routes`]), and which
//! rate-limit header fields an answer carries ([`headers`]). Configuration builds these values;
//! the store and the check path use them.

pub mod headers;
pub mod limit;
pub mod path;
pub mod routes;
