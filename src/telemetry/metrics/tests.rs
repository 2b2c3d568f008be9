//! Unit tests of `telemetry/metrics.rs`.

use super::*;
use crate::config::{Config, DEFAULT_YAML, Overrides};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn results_index_their_own_cell() {
    for (i, result) in CheckResult::ALL.into_iter().enumerate() {
        assert_eq!(result.index(), i, "{result:?}");
    }
}

#[test]
fn config_reloads_are_counted_by_result() {
    let metrics = Metrics::new();
    let text = metrics.encode(Sample::default());
    assert_eq!(
        value(&text, "tollgate_config_reloads_total{result=\"applied\"}"),
        Some(0.0)
    );
    metrics.config_reloaded(true);
    metrics.config_reloaded(false);
    metrics.config_reloaded(false);
    let text = metrics.encode(Sample::default());
    assert_eq!(
        value(&text, "tollgate_config_reloads_total{result=\"applied\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "tollgate_config_reloads_total{result=\"refused\"}"),
        Some(2.0)
    );
}

#[test]
fn every_route_and_result_exists_at_zero_and_counts_in_its_own_cell() {
    let config = Config::from_yaml(DEFAULT_YAML, "test", &Overrides::default()).unwrap();
    let metrics = Metrics::new();
    let check = metrics.for_routes(&config.routes);
    let text = metrics.encode(Sample::default());
    let series = text
        .lines()
        .filter(|l| l.starts_with("tollgate_checks_total{"))
        .count();
    assert_eq!(
        series,
        // default, per_path, quota and none besides the declared routes.
        (config.routes.routes().len() + 4) * CheckResult::ALL.len(),
        "{text}"
    );
    let index = config
        .routes
        .routes()
        .iter()
        .position(|r| &*r.id == "GET /campaigns/:id")
        .unwrap();
    check.count(Some(RouteRef::Declared(index)), CheckResult::Denied);
    check.count(Some(RouteRef::PerPath), CheckResult::Allowed);
    check.count(None, CheckResult::NotLimited);
    let text = metrics.encode(Sample {
        deny_cache_entries: 3,
        breakers_open: 1,
    });
    for (series, expected) in [
        (
            "tollgate_checks_total{result=\"denied\",route=\"GET /campaigns/:id\"}",
            1.0,
        ),
        (
            "tollgate_checks_total{result=\"allowed\",route=\"GET /campaigns/:id\"}",
            0.0,
        ),
        (
            "tollgate_checks_total{result=\"allowed\",route=\"per_path\"}",
            1.0,
        ),
        (
            "tollgate_checks_total{result=\"not_limited\",route=\"none\"}",
            1.0,
        ),
        ("tollgate_deny_cache_entries", 3.0),
        ("tollgate_store_breakers_open", 1.0),
        ("tollgate_build_info{version=\"0.1.0\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series}\n{text}");
    }
}

#[test]
fn store_calls_are_timed_and_their_failures_counted_by_kind() {
    let metrics = Metrics::new();
    let check = metrics.for_routes(
        &Config::from_yaml("", "t", &Overrides::default())
            .unwrap()
            .routes,
    );
    check.store_call(Duration::from_millis(2), None);
    check.store_call(
        Duration::from_millis(50),
        Some(&StoreError::Timeout(Duration::from_millis(50))),
    );
    check.store_call(Duration::ZERO, Some(&StoreError::CircuitOpen));
    let text = metrics.encode(Sample::default());
    for (series, expected) in [
        ("tollgate_store_duration_seconds_count", 3.0),
        ("tollgate_store_errors_total{kind=\"timeout\"}", 1.0),
        ("tollgate_store_errors_total{kind=\"circuit_open\"}", 1.0),
        ("tollgate_store_errors_total{kind=\"error\"}", 0.0),
        ("tollgate_store_errors_total{kind=\"full\"}", 0.0),
        ("tollgate_store_errors_total{kind=\"not_connected\"}", 0.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series}\n{text}");
    }
}
