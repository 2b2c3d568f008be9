//! The `metrics` section: where Prometheus scrapes tollgate.

use super::parse::{address, value_or};
use super::raw::{Problems, RawMetrics, Setting};
use std::net::SocketAddr;

/// The default metrics address: every interface, Prometheus' customary exporter port.
pub(super) const DEFAULT_LISTEN: &str = "0.0.0.0:9090";

/// The metrics listener, or `Some(None)` when it is turned off; `None` after a problem.
pub(super) fn parse_metrics(
    section: Setting<RawMetrics>,
    problems: &mut Problems,
) -> Option<Option<SocketAddr>> {
    let raw = value_or(section, "metrics", RawMetrics::default(), problems)?;
    let enabled = value_or(raw.enabled, "metrics.enabled", true, problems);
    let listen = address(raw.listen, "metrics.listen", DEFAULT_LISTEN, problems);
    // The address is checked even when metrics are off, so that turning them on cannot reveal
    // a problem that was there all along.
    let listen = listen?;
    Some(enabled?.then_some(listen))
}

/// Whether two listeners would fight over one port: the same port, on the same address or with
/// either on every interface.
pub(super) fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};

    fn parse(yaml: &str) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, "test", &Overrides::default()).map_err(|e| e.problems)
    }

    #[test]
    fn metrics_default_to_port_9090_and_can_be_turned_off() {
        let on = parse("").unwrap();
        assert_eq!(on.metrics_listen.unwrap().to_string(), "0.0.0.0:9090");
        assert!(
            on.to_string()
                .contains("metrics:         http://0.0.0.0:9090/metrics")
        );
        let off = parse("metrics: { enabled: false }\n").unwrap();
        assert_eq!(off.metrics_listen, None);
        assert!(off.to_string().contains("metrics:         off"));
        let moved = parse("metrics: { listen: 127.0.0.1:9102 }\n").unwrap();
        assert_eq!(moved.metrics_listen.unwrap().to_string(), "127.0.0.1:9102");
    }

    #[test]
    fn every_metrics_problem_is_reported_with_the_others() {
        let problems = parse(
            "metrics: { enabled: sometimes, listen: nowhere, path: /m }\nfailure_mode: maybe\n",
        )
        .unwrap_err();
        for expected in [
            "metrics: unknown key path",
            "metrics.enabled: invalid type: string \"sometimes\", expected a boolean",
            "metrics.listen: not an address",
            "failure_mode",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let problems = parse("metrics: 9090\n").unwrap_err();
        assert!(
            problems[0].starts_with("metrics: invalid type: integer `9090`, expected a mapping"),
            "{problems:#?}"
        );
    }

    #[test]
    fn metrics_need_a_port_of_their_own() {
        for yaml in [
            "listen: 0.0.0.0:9191\nmetrics: { listen: 127.0.0.1:9191 }\n",
            "listen: 127.0.0.1:9191\nmetrics: { listen: 0.0.0.0:9191 }\n",
            "listen: 127.0.0.1:9191\nmetrics: { listen: 127.0.0.1:9191 }\n",
        ] {
            let problems = parse(yaml).unwrap_err();
            assert!(
                problems[0].contains("is the ext_authz port"),
                "{problems:#?}"
            );
        }
        assert!(parse("listen: 127.0.0.1:9191\nmetrics: { listen: 127.0.0.2:9191 }\n").is_ok());
        assert!(parse("listen: 127.0.0.1:0\nmetrics: { listen: 127.0.0.1:0 }\n").is_ok());
        // Off: nothing to collide with.
        assert!(
            parse("listen: 0.0.0.0:9191\nmetrics: { enabled: false, listen: 0.0.0.0:9191 }\n")
                .is_ok()
        );
    }

    #[test]
    fn the_command_line_moves_the_metrics_listener() {
        let overrides = Overrides {
            metrics_listen: Some("127.0.0.1:9999".into()),
            ..Overrides::default()
        };
        let config =
            Config::from_yaml("metrics: { listen: 0.0.0.0:1 }\n", "test", &overrides).unwrap();
        assert_eq!(config.metrics_listen.unwrap().to_string(), "127.0.0.1:9999");
    }
}
