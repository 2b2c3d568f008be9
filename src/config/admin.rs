//! The `admin` section: where the admin API listens and the token it asks for.

use super::parse::value_or;
use super::raw::{Problems, RawAdmin, Setting};
use crate::admin::{AdminSettings, AdminToken};
use std::net::SocketAddr;

/// Loopback: only processes of the same host (or pod) reach the admin API unless told otherwise.
pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:9192";

/// Validates the section; `listen` is the ext_authz address, which the admin API must not share.
pub(super) fn parse_admin(
    section: Setting<RawAdmin>,
    listen: Option<SocketAddr>,
    problems: &mut Problems,
) -> Option<AdminSettings> {
    let raw = value_or(section, "admin", RawAdmin::default(), problems)?;
    let admin_listen = value_or(raw.listen, "admin.listen", DEFAULT_LISTEN.into(), problems)
        .and_then(|text| {
            text.parse::<SocketAddr>()
                .map_err(|e| {
                    problems.add(
                        "admin.listen",
                        format!("not an address like {DEFAULT_LISTEN} ({e})"),
                    )
                })
                .ok()
        });
    // Mesh workloads reach the ext_authz port; on it they could reset their own quotas.
    if let (Some(admin), Some(listen)) = (admin_listen, listen)
        && admin.port() != 0
        && admin.port() == listen.port()
    {
        problems.add(
            "admin.listen",
            format!(
                "port {} is the ext_authz port (listen); the admin API needs its own",
                admin.port()
            ),
        );
    }
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
