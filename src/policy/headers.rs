//! Which rate-limit header fields an answer carries: part of a policy, chosen by configuration
//! and rendered by the check path.

/// Which rate-limit header fields answers carry (`rate_limit_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix ms), describing one window: the
    /// contract's headers.
    #[default]
    #[serde(rename = "x-ratelimit")]
    XRateLimit,
    /// The IETF HTTPAPI working group's draft `RateLimit-Policy` and `RateLimit` fields,
    /// describing every window.
    #[serde(rename = "ietf")]
    Ietf,
    /// Both.
    #[serde(rename = "both")]
    Both,
}

impl HeaderStyle {
    /// Whether answers carry `X-RateLimit-*`.
    pub fn x_ratelimit(self) -> bool {
        self != Self::Ietf
    }

    /// Whether answers carry the IETF `RateLimit-Policy` and `RateLimit` fields.
    pub fn ietf(self) -> bool {
        self != Self::XRateLimit
    }
}
