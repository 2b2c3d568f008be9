//! Unit tests of `config/parse.rs`.

use super::super::{Config, FailureMode, Overrides, StoreSettings};
use std::time::Duration;

fn parse(yaml: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
    Config::from_yaml(yaml, "test", overrides).map_err(|e| e.problems)
}

/// Text given in code; a file with nothing in it is refused (`Config::from_file_text`).
#[test]
fn no_settings_are_the_defaults_without_routes() {
    let config = parse("", &Overrides::default()).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:9191");
    assert_eq!(config.path_prefix, "/v1");
    assert!(config.routes.routes().is_empty());
    assert_eq!(
        config.routes.default_rule().to_string(),
        "60 requests / 60s"
    );
    assert_eq!(config.failure_mode, FailureMode::Allow);
    assert_eq!(config.drain_period, Duration::from_secs(5));
    assert_eq!(config.shutdown_grace, Duration::from_secs(2));
    assert_eq!(
        config.store,
        StoreSettings::Memory {
            max_entries: 200_000
        }
    );
}

#[test]
fn overrides_win_and_a_redis_url_alone_selects_redis() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:7000".into()),
        redis_url: Some("redis://override:6379".into()),
        admin_listen: None,
        metrics_listen: None,
    };
    let config = parse("listen: 0.0.0.0:1\nredis: { timeout: 20ms }\n", &overrides).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
    let redis = config.store.redis().unwrap().clone();
    assert_eq!(redis.url, "redis://override:6379");
    assert_eq!(
        redis.timeout,
        Duration::from_millis(20),
        "the file's other settings stay"
    );
    let only_url = parse("", &overrides).unwrap().store;
    let StoreSettings::Redis(only_url) = only_url else {
        panic!("{only_url:?}")
    };
    assert_eq!(
        (only_url.timeout, only_url.connections),
        (Duration::from_millis(50), 4)
    );
}

#[test]
fn the_redis_section_is_validated_as_a_whole() {
    let problems = parse(
        "redis: { timeout: 0ms, connections: 0, cluster: yes please, key_prefix: \"a{b\", extra: 1 }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    for expected in [
        "redis: url is missing",
        "redis.timeout",
        "redis.connections: must be a whole number from 1 to 64",
        "redis.cluster: invalid type: string \"yes please\", expected a boolean",
        "redis.key_prefix",
        "redis: unknown key extra",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }
    let cluster = parse(
        "redis: { url: \"redis://n1:7000\", cluster: true }\n",
        &Overrides::default(),
    );
    assert!(matches!(cluster.unwrap().store, StoreSettings::Cluster(_)));
}

#[test]
fn the_admin_section_has_loopback_defaults_and_is_validated() {
    let config = parse("", &Overrides::default()).unwrap();
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9192");
    assert!(config.admin.token.is_none());

    let token = std::env::temp_dir().join(format!("tollgate-token-{}", std::process::id()));
    std::fs::write(&token, "s3cret\n").unwrap();
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:7001, token_file: {} }}\n",
        token.display()
    );
    let config = parse(&yaml, &Overrides::default()).unwrap();
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:7001");
    assert!(config.admin.token.as_ref().unwrap().matches("s3cret"));
    assert!(!config.to_string().contains("s3cret"), "{config}");
    assert!(config.to_string().contains("bearer token from"), "{config}");
    std::fs::remove_file(&token).unwrap();

    let problems = parse(
        "listen: 0.0.0.0:9191\nadmin: { listen: 127.0.0.1:9191, token_file: /nonexistent/token, port: 1 }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    for expected in [
        "admin.listen: port 9191 is the ext_authz port",
        "admin.token_file: cannot read /nonexistent/token",
        "admin: unknown key port",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }
    let overridden = Overrides {
        admin_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    assert_eq!(
        parse("admin: { listen: 10.0.0.1:1 }\n", &overridden)
            .unwrap()
            .admin
            .listen
            .to_string(),
        "127.0.0.1:0"
    );
}

#[test]
fn types_are_not_coerced() {
    let problems = parse(
        "listen: 9191\nfailure_mode: true\nroutes:\n  - { method: GET, path: /a, limit: { requests: \"10\", window: 60 } }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn the_shutdown_durations_may_be_zero_and_are_checked_together() {
    let config = parse(
        "drain_period: 0s\nshutdown_grace: 500ms\n",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        (config.drain_period, config.shutdown_grace),
        (Duration::ZERO, Duration::from_millis(500))
    );
    let problems = parse(
        "drain_period: soon\nshutdown_grace: 2x\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("drain_period"), "{problems:#?}");
    assert!(problems[1].starts_with("shutdown_grace"), "{problems:#?}");
}

#[test]
fn the_quota_endpoint_is_off_by_default_and_its_problems_are_named() {
    assert_eq!(
        parse("{}", &Overrides::default()).unwrap().quota_endpoint,
        None
    );
    let on = parse(
        "quota_endpoint: { path: /v1/rate_limit }",
        &Overrides::default(),
    )
    .unwrap()
    .quota_endpoint
    .unwrap();
    assert_eq!(on.path, "/v1/rate_limit");
    assert_eq!(on.rule.to_string(), "60 requests / 60s");
    let problems = |yaml: &str| parse(yaml, &Overrides::default()).unwrap_err();
    let missing = problems("quota_endpoint: { limit: { requests: 0, window: 1m } }");
    assert!(
        missing
            .iter()
            .any(|p| p == "quota_endpoint: path is missing"),
        "{missing:?}"
    );
    assert!(
        missing
            .iter()
            .any(|p| p.starts_with("quota_endpoint.limit: requests is 0")),
        "every problem at once: {missing:?}"
    );
    for path in [
        "/v1/rate_limit/",
        "/v1/../rate",
        "v1/rate",
        "/",
        "/v1/rate?x=1",
    ] {
        let refused = problems(&format!("quota_endpoint: {{ path: {path:?} }}"));
        assert!(
            refused[0].starts_with("quota_endpoint.path: "),
            "{path}: {refused:?}"
        );
    }
    let shadowed = problems(
        "quota_endpoint: { path: /v1/limits }\nroutes:\n  - { method: GET, path: /:what, limit: { requests: 1, window: 1s } }",
    );
    assert_eq!(
        shadowed,
        [
            "quota_endpoint.path: /v1/limits is also matched by route \"GET /:id\": give the endpoint a path no route declares"
        ]
    );
}

#[test]
fn tracing_is_off_by_default_and_its_endpoint_is_plain_grpc() {
    assert_eq!(parse("{}", &Overrides::default()).unwrap().tracing, None);
    let on = parse(
        "tracing: { otlp_endpoint: \"http://otel-collector:4317\", sampling_ratio: 0.25 }",
        &Overrides::default(),
    )
    .unwrap()
    .tracing
    .unwrap();
    assert_eq!(
        (on.otlp_endpoint.as_str(), on.sampling_ratio),
        ("http://otel-collector:4317", 0.25)
    );
    let problems = parse(
        "tracing: { otlp_endpoint: \"https://collector:4317\", sampling_ratio: 2 }",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        problems[0].starts_with(
            "tracing.otlp_endpoint: \"https://collector:4317\" must be an http:// URL"
        ),
        "{problems:?}"
    );
    assert_eq!(
        problems[1],
        "tracing.sampling_ratio: must be from 0 to 1, not 2"
    );
    assert_eq!(
        parse("tracing: {}", &Overrides::default()).unwrap_err(),
        ["tracing: otlp_endpoint is missing"]
    );
}
