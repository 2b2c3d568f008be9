//! The `admin` section: where the admin API listens and the token it asks for.

use super::parse::{address, own_port, value_or};
use super::raw::{Problems, RawAdmin, Setting};
use super::token::AdminToken;
use std::net::SocketAddr;

/// Where the admin API listens and what it asks of callers.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Address of the admin listener; loopback by default.
    pub listen: SocketAddr,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
}

/// The admin API's address unless told otherwise (`admin.listen`, and the `tollgate admin`
/// client's `--addr`): loopback, so only processes of the same host (or pod) reach it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9192";

/// Validates the section; `listen` is the ext_authz address, which the admin API must not share.
pub(super) fn parse_admin(
    section: Setting<RawAdmin>,
    listen: Option<SocketAddr>,
    problems: &mut Problems,
) -> Option<AdminSettings> {
    let raw = value_or(section, "admin", RawAdmin::default(), problems)?;
    let admin_listen = address(raw.listen, "admin.listen", DEFAULT_LISTEN, problems);
    // Mesh workloads reach the ext_authz port; on it they could reset their own quotas.
    own_port("admin.listen", admin_listen, listen, problems);
    let token = match raw.token_file {
        None => Some(None),
        Some(path) => path.take("admin.token_file", problems).and_then(|path| {
            match std::fs::read_to_string(&path) {
                Ok(text) => match AdminToken::new(path.clone().into(), text.trim()) {
                    Ok(token) => Some(Some(token)),
                    Err(e) => {
                        problems.add("admin.token_file", format!("{path}: {e}"));
                        None
                    }
                },
                Err(e) => {
                    problems.add("admin.token_file", format!("cannot read {path}: {e}"));
                    None
                }
            }
        }),
    };
    Some(AdminSettings {
        listen: admin_listen?,
        token: token?,
    })
}
