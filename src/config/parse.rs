//! Validation: the file as written ([`RawConfig`]) into a [`Config`], with every problem found
//! reported at once, each with where it is.

use super::admin::parse_admin;
use super::metrics::{overlap, parse_metrics};
use super::raw::{Checked, Problems, RawConfig, RawLimit, RawRoute, RawTable, Setting};
use super::redis::parse_redis;
use super::{Config, Overrides};
use crate::check::path::normalize;
use crate::check::routes::{DECLARABLE_METHODS, Route, RouteTable, Template};
use crate::limit::{Limit, Mode, Rule, WindowError, parse_window};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

/// The largest limit accepted: a bucket keeps one time per slot of its largest window.
const MAX_REQUESTS: u64 = 100_000;

/// The name under which the bounds of every table's default rule are gathered: undeclared
/// requests of a key share buckets (`default`, or one per path) whatever its plan.
const DEFAULT_BUCKETS: &str = "*";

/// The contract's default: 60 requests per 60 s.
const DEFAULT_LIMIT: Limit = Limit {
    requests: NonZeroU32::new(60).unwrap(),
    window: Duration::from_secs(60),
};

pub(super) fn parse(text: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
    let mut problems = Problems::default();
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
    let mut raw = if document.is_null() {
        RawConfig::default()
    } else {
        let mut unknown = Vec::new();
        let raw = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e: serde_yaml::Error| {
            vec![format!("the file must be a mapping of settings ({e})")]
        })?;
        problems.unknown_keys("top level", &unknown);
        raw
    };
    apply_overrides(&mut raw, overrides);
    match validate(raw, &mut problems) {
        Some(config) if problems.0.is_empty() => Ok(config),
        _ => Err(problems.0),
    }
}

/// Whether `text` is a YAML document with nothing in it: empty, whitespace, comments, a lone
/// `---` or an explicit null. Text that is not YAML at all is left to [`parse`] to report.
pub(super) fn holds_no_settings(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).is_ok_and(|document| document.is_null())
}

fn apply_overrides(raw: &mut RawConfig, overrides: &Overrides) {
    if let Some(listen) = &overrides.listen {
        raw.listen = Some(Checked::given(listen.clone()));
    }
    if let Some(listen) = &overrides.admin_listen {
        let admin = raw
            .admin
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(admin) = admin.as_mut() {
            admin.listen = Some(Checked::given(listen.clone()));
        }
    }
    if let Some(url) = &overrides.redis_url {
        let redis = raw
            .redis
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(redis) = redis.as_mut() {
            redis.url = Some(Checked::given(url.clone()));
        }
    }
    if let Some(listen) = &overrides.metrics_listen {
        let metrics = raw
            .metrics
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(metrics) = metrics.as_mut() {
            metrics.listen = Some(Checked::given(listen.clone()));
        }
    }
}

/// A setting's value, `default` when absent; `None` after a problem.
pub(super) fn value_or<T>(
    setting: Setting<T>,
    at: &str,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    match setting {
        None => Some(default),
        Some(checked) => checked.take(at, problems),
    }
}

/// One of an enum's names (`allow`, `per_path`), `default` when absent.
pub(super) fn choice<T: serde::de::DeserializeOwned>(
    setting: Setting<String>,
    at: &str,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    let Some(name) = setting else {
        return Some(default);
    };
    let name = name.take(at, problems)?;
    serde_yaml::from_value(serde_yaml::Value::String(name))
        .map_err(|e| problems.add(at, e))
        .ok()
}

/// A whole number in `range`, `default` when absent.
pub(super) fn whole_number(
    setting: Setting<u64>,
    at: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
    problems: &mut Problems,
) -> Option<u64> {
    match value_or(setting, at, default, problems)? {
        n if range.contains(&n) => Some(n),
        n => {
            problems.add(
                at,
                format!(
                    "must be a whole number from {} to {}, not {n}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

fn validate(raw: RawConfig, problems: &mut Problems) -> Option<Config> {
    let listen: Option<std::net::SocketAddr> =
        value_or(raw.listen, "listen", "0.0.0.0:9191".into(), problems).and_then(|text| {
            text.parse()
                .map_err(|e| {
                    problems.add("listen", format!("not an address like 0.0.0.0:9191 ({e})"))
                })
                .ok()
        });

    let api_key_header = value_or(
        raw.api_key_header,
        "api_key_header",
        "x-api-key".into(),
        problems,
    )
    .and_then(|name| header_name(&name, "api_key_header", problems));

    let path_prefix = value_or(raw.path_prefix, "path_prefix", "/v1".into(), problems).and_then(
        |text| match normalize(&text) {
            Ok(normal) if normal == text.trim_end_matches('/') || normal == "/" => Some(normal),
            _ => {
                problems.add(
                    "path_prefix",
                    format!("{text:?} must be a plain absolute path such as /v1 (lower case, no '.', '//', '%' or query)"),
                );
                None
            }
        },
    );

    let default_bucket = choice(
        raw.default_bucket,
        "default_bucket",
        Default::default(),
        problems,
    );
    let failure_mode = choice(
        raw.failure_mode,
        "failure_mode",
        Default::default(),
        problems,
    );
    let rate_limit_headers = choice(
        raw.rate_limit_headers,
        "rate_limit_headers",
        Default::default(),
        problems,
    );

    let drain_period = duration(
        raw.drain_period,
        "drain_period",
        Duration::from_secs(5),
        problems,
    );
    // Checks in flight end within Envoy's ext_authz timeout (0.25 s shipped); what is still open
    // after a couple of seconds is a stream that never ends, such as a health Watch.
    let shutdown_grace = duration(
        raw.shutdown_grace,
        "shutdown_grace",
        Duration::from_secs(2),
        problems,
    );
    let deny_cache_entries = whole_number(
        raw.deny_cache_entries,
        "deny_cache_entries",
        0..=10_000_000,
        100_000,
        problems,
    )
    .map(|n| n as usize);
    let max_request_bytes = whole_number(
        raw.max_request_bytes,
        "max_request_bytes",
        4096..=16 << 20,
        256 << 10,
        problems,
    )
    .map(|n| n as usize);
    let memory_store_entries = whole_number(
        raw.memory_store_entries,
        "memory_store_entries",
        1..=100_000_000,
        200_000,
        problems,
    )
    .map(|n| n as usize);

    let metrics_listen = parse_metrics(raw.metrics, problems);
    if let (Some(listen), Some(Some(metrics))) = (listen, metrics_listen)
        && overlap(listen, metrics)
    {
        problems.add(
            "metrics.listen",
            format!(
                "{metrics} takes the port of listen ({listen}); give metrics a port of its own"
            ),
        );
    }
    let store = parse_redis(raw.redis, memory_store_entries, problems);
    let admin = parse_admin(raw.admin, listen, problems);

    // The top-level table, then each plan over it.
    let top = TableSpec::read(
        "",
        RawTable {
            default_limit: raw.default_limit,
            default_limits: raw.default_limits,
            mode: raw.mode,
            routes: raw.routes,
        },
        None,
        problems,
    );
    let plan_header = raw
        .plan_header
        .and_then(|name| name.take("plan_header", problems))
        .and_then(|name| header_name(&name, "plan_header", problems));
    if let (Some(plan), Some(key)) = (&plan_header, &api_key_header)
        && plan == key
    {
        problems.add("plan_header", "must differ from api_key_header");
    }
    let mut plans = BTreeMap::new();
    for (name, plan) in raw
        .plans
        .and_then(|p| p.take("plans", problems))
        .unwrap_or_default()
    {
        let at = format!("plans.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            problems.add(
                &at,
                "a plan name is 1 to 64 letters, digits, '-', '_' or '.'",
            );
        }
        if let Some(plan) = plan.take(&at, problems) {
            plans.insert(name, TableSpec::read(&at, plan, Some(&top), problems));
        }
    }

    let path_prefix = path_prefix?;
    let default_bucket = default_bucket?;
    // One bucket per route serves every table's rule for it (a key keeps its counts when it
    // changes plan), so each rule keeps as many times, as long, as the largest of them needs.
    let mut bounds: HashMap<&str, (u32, Duration)> = HashMap::new();
    for spec in std::iter::once(&top).chain(plans.values()) {
        let rules = spec
            .routes
            .iter()
            .map(|r| (&*r.route.id, &r.route.rule))
            .chain([(DEFAULT_BUCKETS, &spec.default_rule)]);
        for (name, rule) in rules {
            let bound = bounds.entry(name).or_default();
            bound.0 = bound.0.max(rule.capacity());
            bound.1 = bound.1.max(rule.longest_window());
        }
    }
    let shared = |name: &str, rule: &Rule| {
        let (capacity, retain) = bounds[name];
        rule.sharing(capacity, retain)
    };
    let table = |spec: &TableSpec| {
        let routes = spec
            .routes
            .iter()
            .map(|r| Route {
                rule: shared(&r.route.id, &r.route.rule),
                ..r.route.clone()
            })
            .collect();
        RouteTable::new(
            path_prefix.clone(),
            routes,
            shared(DEFAULT_BUCKETS, &spec.default_rule),
            default_bucket,
        )
    };
    let routes = table(&top);
    let plans = plans
        .iter()
        .map(|(name, spec)| (name.clone(), table(spec)))
        .collect();
    Some(Config {
        listen: listen?,
        admin: admin?,
        api_key_header: api_key_header?,
        rate_limit_headers: rate_limit_headers?,
        routes,
        plans,
        plan_header,
        path_prefix,
        store: store?,
        failure_mode: failure_mode?,
        drain_period: drain_period?,
        shutdown_grace: shutdown_grace?,
        deny_cache_entries: deny_cache_entries?,
        max_request_bytes: max_request_bytes?,
        source: None,
        metrics_listen: metrics_listen?,
    })
}

/// A lower-case header name, or a problem.
fn header_name(name: &str, at: &str, problems: &mut Problems) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        problems.add(at, format!("{name:?} is not a valid header name"));
        return None;
    }
    Some(name)
}

/// A top-level duration that may be zero, `default` when absent.
fn duration(
    setting: Setting<String>,
    at: &str,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    let Some(text) = setting else {
        return Some(default);
    };
    match parse_window(&text.take(at, problems)?) {
        Ok(period) => Some(period),
        Err(WindowError::Zero(_)) => Some(Duration::ZERO),
        Err(e) => {
            problems.add(at, e);
            None
        }
    }
}

/// A route table as configured: the top level's, or a plan's merged over it.
struct TableSpec {
    routes: Vec<RouteSpec>,
    default_rule: Rule,
    mode: Mode,
}

/// A route and whether its mode was written on it (otherwise it follows its table's).
struct RouteSpec {
    route: Route,
    own_mode: bool,
}

impl TableSpec {
    /// Reads the table at `at` (`""` for the top level). A plan (`base` given) inherits what it
    /// does not set: the base's windows for undeclared routes, and every base route it does not
    /// declare, in the plan's mode unless the route sets its own. After a problem the table is
    /// still read as far as it goes, with defaults in place of what is wrong, so that the
    /// problems of its routes and of the plans over it are reported too.
    fn read(at: &str, raw: RawTable, base: Option<&TableSpec>, problems: &mut Problems) -> Self {
        let prefixed = |key: &str| {
            if at.is_empty() {
                key.to_owned()
            } else {
                format!("{at}.{key}")
            }
        };
        let inherited = base.map_or(Mode::Enforce, |b| b.mode);
        let mode = choice(raw.mode, &prefixed("mode"), inherited, problems).unwrap_or(inherited);
        let default_limits = match (raw.default_limit, raw.default_limits) {
            (Some(_), Some(_)) => {
                problems.add(
                    &prefixed("default_limits"),
                    "give default_limit or default_limits, not both",
                );
                None
            }
            (Some(one), None) => {
                let at = prefixed("default_limit");
                one.take(&at, problems)
                    .and_then(|l| limit(l, &at, problems))
                    .map(|l| vec![l])
            }
            (None, Some(list)) => limits(list, &prefixed("default_limits"), problems),
            (None, None) => {
                Some(base.map_or_else(|| vec![DEFAULT_LIMIT], |b| b.default_rule.limits().to_vec()))
            }
        };
        let mut routes: Vec<RouteSpec> = Vec::new();
        let mut at_of: Vec<String> = Vec::new();
        let items = match raw.routes {
            None => Vec::new(),
            Some(items) => items
                .take(&prefixed("routes"), problems)
                .unwrap_or_default(),
        };
        for (index, item) in items.into_iter().enumerate() {
            let at = prefixed(&format!("routes[{index}]"));
            let Some(raw_route) = item.take(&at, problems) else {
                continue;
            };
            let Some(located) = route(raw_route, &at, mode, problems) else {
                continue;
            };
            let new = &located.spec.route;
            if let Some(first) = routes
                .iter()
                .position(|r| r.route.method == new.method && r.route.template == new.template)
            {
                problems.add(
                    &located.at,
                    format!("duplicates {}: both match the same requests", at_of[first]),
                );
                continue;
            }
            at_of.push(located.at);
            routes.push(located.spec);
        }
        let default_limits = default_limits.unwrap_or_else(|| vec![DEFAULT_LIMIT]);
        let default_rule = Rule::new(default_limits, 1, mode)
            .map_err(|e| problems.add(&prefixed("default_limits"), e))
            .unwrap_or_else(|_| Rule::single(DEFAULT_LIMIT));
        if let Some(base) = base {
            // The base's routes this plan does not declare, in the plan's mode unless their own.
            for inherited in &base.routes {
                let declared = routes.iter().any(|r| {
                    r.route.method == inherited.route.method
                        && r.route.template == inherited.route.template
                });
                if !declared {
                    let rule = if inherited.own_mode {
                        inherited.route.rule.clone()
                    } else {
                        inherited.route.rule.with_mode(mode)
                    };
                    routes.push(RouteSpec {
                        route: Route::new(
                            &inherited.route.method,
                            inherited.route.template.clone(),
                            rule,
                        ),
                        own_mode: inherited.own_mode,
                    });
                }
            }
        }
        Self {
            routes,
            default_rule,
            mode,
        }
    }
}

/// A route read at `at`, with its location named by method and path for later problems.
struct LocatedRoute {
    spec: RouteSpec,
    at: String,
}

fn route(
    raw: RawRoute,
    at: &str,
    table_mode: Mode,
    problems: &mut Problems,
) -> Option<LocatedRoute> {
    let (method_given, path_given) = (raw.method.is_some(), raw.path.is_some());
    let method = raw
        .method
        .and_then(|m| m.take(&format!("{at}.method"), problems));
    let path = raw
        .path
        .and_then(|p| p.take(&format!("{at}.path"), problems));
    let at = format!(
        "{at} ({} {})",
        method.as_deref().unwrap_or("?"),
        path.as_deref().unwrap_or("?")
    );
    let method = match method {
        None => {
            if !method_given {
                problems.add(&at, "method is missing");
            }
            None
        }
        Some(m) if DECLARABLE_METHODS.contains(&m.to_ascii_uppercase().as_str()) => Some(m),
        Some(m) => {
            let hint = match m.to_ascii_uppercase().as_str() {
                "HEAD" => "HEAD is checked as GET; declare GET",
                "OPTIONS" => "OPTIONS (CORS preflight) is never counted",
                _ => "expected one of GET, POST, PUT, PATCH, DELETE",
            };
            problems.add(&at, format!("method {m:?} cannot be declared: {hint}"));
            None
        }
    };
    let template = match path {
        None => {
            if !path_given {
                problems.add(&at, "path is missing");
            }
            None
        }
        Some(p) => Template::parse(&p).map_err(|e| problems.add(&at, e)).ok(),
    };
    let limits = match (raw.limit, raw.limits) {
        (None, None) => {
            problems.add(&at, "limit (or limits) is missing");
            None
        }
        (Some(_), Some(_)) => {
            problems.add(&at, "give limit or limits, not both");
            None
        }
        (Some(one), None) => {
            let at = format!("{at}.limit");
            one.take(&at, problems)
                .and_then(|l| limit(l, &at, problems))
                .map(|l| vec![l])
        }
        (None, Some(list)) => limits(list, &format!("{at}.limits"), problems),
    };
    let cost = match raw.cost {
        None => Some(1),
        Some(cost) => cost.take(&format!("{at}.cost"), problems).and_then(|c| {
            u32::try_from(c)
                .map_err(|_| {
                    problems.add(
                        &format!("{at}.cost"),
                        format!("{c} is larger than any window"),
                    )
                })
                .ok()
        }),
    };
    let own_mode = raw.mode.is_some();
    let mode = choice(raw.mode, &format!("{at}.mode"), table_mode, problems);
    let rule = Rule::new(limits?, cost?, mode?)
        .map_err(|e| problems.add(&at, e))
        .ok()?;
    Some(LocatedRoute {
        spec: RouteSpec {
            route: Route::new(&method?, template?, rule),
            own_mode,
        },
        at,
    })
}

fn limits(
    list: Checked<Vec<Checked<RawLimit>>>,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<Limit>> {
    let items = list.take(at, problems)?;
    if items.is_empty() {
        problems.add(at, "must list at least one { requests, window }");
        return None;
    }
    let mut limits = Vec::new();
    let mut complete = true;
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        match item
            .take(&at, problems)
            .and_then(|l| limit(l, &at, problems))
        {
            Some(limit) => limits.push(limit),
            None => complete = false,
        }
    }
    complete.then_some(limits)
}

fn limit(raw: RawLimit, at: &str, problems: &mut Problems) -> Option<Limit> {
    let requests_given = raw.requests.is_some();
    let requests = match raw
        .requests
        .and_then(|r| r.take(&format!("{at}.requests"), problems))
    {
        None => {
            if !requests_given {
                problems.add(at, "requests is missing");
            }
            None
        }
        Some(0) => {
            problems.add(at, "requests is 0; a limit must admit at least one request");
            None
        }
        Some(n) if n <= MAX_REQUESTS => NonZeroU32::new(n as u32),
        Some(n) => {
            problems.add(
                at,
                format!("requests must be a whole number from 1 to {MAX_REQUESTS}, not {n}"),
            );
            None
        }
    };
    let window = match raw.window {
        None => {
            problems.add(at, "window is missing");
            None
        }
        Some(text) => text
            .take(&format!("{at}.window"), problems)
            .and_then(|text| parse_window(&text).map_err(|e| problems.add(at, e)).ok()),
    };
    Some(Limit {
        requests: requests?,
        window: window?,
    })
}
#[cfg(test)]
mod tests {
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
}

#[cfg(test)]
mod policy_tests {
    use super::super::{Config, Overrides};
    use crate::check::response::HeaderStyle;
    use crate::limit::Mode;

    fn parse(yaml: &str) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, "test", &Overrides::default()).map_err(|e| e.problems)
    }

    const POLICY: &str = r#"
mode: shadow
default_limits: [{ requests: 100, window: 1h }, { requests: 10, window: 1s }]
rate_limit_headers: both
plan_header: x-plan
routes:
  - { method: GET, path: /a, limit: { requests: 5, window: 1s } }
  - { method: POST, path: /bulk, cost: 5, mode: enforce, limits: [{ requests: 10, window: 1s }, { requests: 50, window: 1m }] }
plans:
  pro:
    mode: enforce
    default_limit: { requests: 1000, window: 1h }
    routes:
      - { method: GET, path: /a, limit: { requests: 50, window: 1s } }
      - { method: GET, path: /only-pro, limit: { requests: 7, window: 1s } }
  trial: {}
"#;

    #[test]
    fn windows_costs_modes_and_plans_resolve_with_inheritance() {
        let config = parse(POLICY).unwrap();
        assert_eq!(config.rate_limit_headers, HeaderStyle::Both);
        assert_eq!(config.plan_header.as_deref(), Some("x-plan"));
        let rule = |table: &crate::check::routes::RouteTable, name: &str| {
            table.rule_of(name).map(ToString::to_string)
        };
        let top = &config.routes;
        assert_eq!(
            top.default_rule().to_string(),
            "10 requests / 1s + 100 requests / 3600s, shadow"
        );
        assert_eq!(rule(top, "GET /a").unwrap(), "5 requests / 1s, shadow");
        assert_eq!(
            rule(top, "POST /bulk").unwrap(),
            "10 requests / 1s + 50 requests / 60s, cost 5"
        );
        assert_eq!(rule(top, "GET /only-pro"), None);

        let pro = &config.plans["pro"];
        assert_eq!(rule(pro, "GET /a").unwrap(), "50 requests / 1s");
        assert_eq!(rule(pro, "GET /only-pro").unwrap(), "7 requests / 1s");
        // Not named by the plan: the top-level limit, in the plan's mode.
        assert_eq!(
            rule(pro, "POST /bulk").unwrap(),
            "10 requests / 1s + 50 requests / 60s, cost 5"
        );
        assert_eq!(pro.default_rule().to_string(), "1000 requests / 3600s");
        // An empty plan is the top-level table.
        let trial = &config.plans["trial"];
        assert_eq!(trial.default_rule(), top.default_rule());
        assert_eq!(rule(trial, "GET /a"), rule(top, "GET /a"));
        assert_eq!(trial.default_rule().mode(), Mode::Shadow);

        let printed = config.to_string();
        for expected in [
            "plan pro:",
            "plan trial:",
            "/v1/bulk",
            "cost 5",
            "shadow",
            "plan header:     x-plan",
        ] {
            assert!(printed.contains(expected), "{expected:?} in\n{printed}");
        }
    }

    #[test]
    fn every_policy_problem_is_named_with_its_place() {
        let problems = parse(
            r#"
mode: sometimes
default_limit: { requests: 1, window: 1s }
default_limits: [{ requests: 2, window: 1s }]
rate_limit_headers: draft
plan_header: x-api-key
routes:
  - { method: GET, path: /a, limit: { requests: 5, window: 1s }, limits: [{ requests: 5, window: 1s }] }
  - { method: GET, path: /b, cost: 0, limit: { requests: 5, window: 1s } }
  - { method: GET, path: /c, cost: 6, limits: [{ requests: 5, window: 1s }, { requests: 50, window: 1m }] }
  - { method: GET, path: /d, limits: [{ requests: 5, window: 60s }, { requests: 9, window: 1m }] }
  - { method: GET, path: /e, limits: [] }
  - { method: GET, path: /f, mode: dry, limit: { requests: 5, window: 1s } }
plans:
  "bad name!": {}
  pro: { routes: [{ method: GET, path: /g }], colour: blue }
"#,
        )
        .unwrap_err();
        for expected in [
            "mode: unknown variant `sometimes`",
            "default_limits: give default_limit or default_limits, not both",
            "rate_limit_headers: unknown variant `draft`",
            "plan_header: must differ from api_key_header",
            "routes[0] (GET /a): give limit or limits, not both",
            "routes[1] (GET /b): cost must be at least 1",
            "routes[2] (GET /c): cost 6 is larger than the 5 requests / 1s limit",
            "routes[3] (GET /d): two limits have the same window 60s",
            "routes[4] (GET /e).limits: must list at least one",
            "routes[5] (GET /f).mode: unknown variant `dry`",
            "plans.bad name!: a plan name is",
            "plans.pro: unknown key colour",
            "plans.pro.routes[0] (GET /g): limit (or limits) is missing",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
    }
}
