//! Unit tests of `config/mod.rs`.

use super::*;

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("redis://127.0.0.1:6379"),
        "redis://127.0.0.1:6379"
    );
    assert_eq!(
        redact_url("redis://:s3cret@redis:6379/0"),
        "redis://:***@redis:6379/0"
    );
    assert_eq!(
        redact_url("rediss://user:p@ss@host/"),
        "rediss://user:***@host/"
    );
    assert_eq!(
        redact_url("redis://:p%2Fss@host:6379"),
        "redis://:***@host:6379"
    );
    assert_eq!(
        redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
        "redis+unix:///run/redis.sock?db=1&pass=***"
    );
    assert_eq!(
        redact_url("redis+unix:///run/redis.sock?pass=a@b"),
        "redis+unix:///run/redis.sock?pass=***"
    );
}

#[test]
fn passwords_that_break_the_url_syntax_are_redacted() {
    // Raw `/`, `?`, `#` or `@` in the password: not a valid URL, but still no leak.
    for (url, expected) in [
        ("redis://:pa/ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:a?b/c@host", "redis://user:***@host"),
        ("redis://:x#y@host", "redis://:***@host"),
        (":s3cret@host:6379", ":***@host:6379"),
        ("redis://user:pw", "redis://user:pw"),
    ] {
        assert_eq!(redact_url(url), expected, "{url}");
    }
}

#[test]
fn a_printed_configuration_shows_no_password() {
    let yaml = "redis: { url: \"redis://app:s3cret@redis:6379/0\" }\n";
    let config = Config::from_yaml(yaml, "test", &Overrides::default()).expect("valid");
    for printed in [format!("{config:?}"), config.to_string()] {
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("redis://app:***@redis:6379/0"),
            "{printed}"
        );
    }
}

#[test]
fn a_file_that_holds_no_settings_is_refused_and_braces_ask_for_the_defaults() {
    for empty in [
        "",
        " \n   \n\n",
        "# all commented out\n",
        "---\n",
        "--- # x\n",
        "~\n",
    ] {
        let refused =
            Config::from_file_text(empty, "f.yaml", &Overrides::default()).expect_err(empty);
        assert_eq!(refused.source_name, "f.yaml");
        assert_eq!(refused.problems.len(), 1, "{refused}");
        assert!(
            refused.problems[0].contains("holds no settings"),
            "{refused}"
        );
    }
    let defaults = Config::from_file_text("{}\n", "f.yaml", &Overrides::default()).unwrap();
    assert!(defaults.routes.routes().is_empty());
    // Text that is not YAML is reported as such, not as empty.
    let broken =
        Config::from_file_text("routes: [\n", "f.yaml", &Overrides::default()).unwrap_err();
    assert!(broken.problems[0].starts_with("not valid YAML"), "{broken}");

    // At start-up too.
    let file = std::env::temp_dir().join(format!("tollgate-empty-{}.yaml", std::process::id()));
    std::fs::write(&file, "\n").unwrap();
    let refused = Config::load(Some(&file), &Overrides::default()).unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert!(
        refused.problems[0].contains("holds no settings"),
        "{refused}"
    );
}

#[test]
fn the_built_in_configuration_is_the_contract_table() {
    let config = Config::load(None, &Overrides::default()).expect("built-in config");
    let table: Vec<String> = config
        .routes
        .routes()
        .iter()
        .map(|r| format!("{} {}", r.id, r.rule))
        .collect();
    let mut expected = vec![
        "GET /analytics 30 requests / 60s",
        "GET /analytics/daily 30 requests / 60s",
        "GET /analytics/by-user 30 requests / 60s",
        "POST /leads/add_to_campaign 20 requests / 60s",
        "GET /campaigns 60 requests / 60s",
        "GET /campaigns/:id 120 requests / 60s",
        "GET /campaigns/:id/statistics 30 requests / 60s",
        "GET /users 60 requests / 60s",
        "GET /users/:id 60 requests / 60s",
        "GET /teams/me 60 requests / 60s",
    ];
    let mut got: Vec<&str> = table.iter().map(String::as_str).collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected);
    assert_eq!(
        config.routes.default_rule().to_string(),
        "60 requests / 60s"
    );
    assert_eq!(config.listen.to_string(), "0.0.0.0:9191");
    assert_eq!(
        config.store,
        StoreSettings::Memory {
            max_entries: 200_000
        }
    );
    assert_eq!(config.failure_mode, FailureMode::Allow);
}
