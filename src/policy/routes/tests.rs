//! Unit tests of `policy/routes.rs`.

use super::*;
use crate::policy::limit::Limit;

fn limit(n: u32) -> Rule {
    Rule::single(Limit::per_minute(n))
}

fn table(default_bucket: DefaultBucket) -> RouteTable {
    let routes = [
        ("GET", "/campaigns/:id", 120),
        ("GET", "/campaigns/:id/statistics", 30),
        ("GET", "/campaigns", 60),
        ("GET", "/campaigns/archived", 5),
        ("POST", "/leads/add_to_campaign", 20),
    ]
    .into_iter()
    .map(|(m, p, n)| Route::new(m, Template::parse(p).unwrap(), limit(n)))
    .collect();
    RouteTable::new("/v1".into(), routes, limit(60), default_bucket)
}

fn route_id(table: &RouteTable, method: &str, path: &str) -> String {
    table
        .bucket(method, path)
        .map_or_else(|| "unlimited".to_owned(), |b| b.name.into_owned())
}

#[test]
fn most_specific_template_wins() {
    let t = table(DefaultBucket::Shared);
    assert_eq!(route_id(&t, "GET", "/v1/campaigns/7"), "GET /campaigns/:id");
    assert_eq!(
        route_id(&t, "GET", "/v1/campaigns/archived"),
        "GET /campaigns/archived"
    );
    assert_eq!(
        route_id(&t, "GET", "/v1/campaigns/7/statistics"),
        "GET /campaigns/:id/statistics"
    );
    assert_eq!(route_id(&t, "GET", "/v1/campaigns"), "GET /campaigns");
    assert_eq!(
        route_id(&t, "POST", "/v1/leads/add_to_campaign"),
        "POST /leads/add_to_campaign"
    );
}

#[test]
fn undeclared_requests_share_the_default_bucket_unless_per_path() {
    let shared = table(DefaultBucket::Shared);
    assert_eq!(route_id(&shared, "POST", "/v1/campaigns/7"), "default");
    assert_eq!(route_id(&shared, "GET", "/v1/campaigns/7/x"), "default");
    assert_eq!(route_id(&shared, "GET", "/v1"), "default");
    let deep = format!("/v1/campaigns{}", "/7".repeat(MAX_SEGMENTS + 5));
    assert_eq!(
        route_id(&shared, "GET", &deep),
        "default",
        "longer than any template"
    );
    let per_path = table(DefaultBucket::PerPath);
    assert_eq!(
        route_id(&per_path, "GET", "/v1/campaigns/7/x"),
        "default GET /v1/campaigns/7/x"
    );
    assert_eq!(
        shared.bucket("GET", "/v1/zzz").map(|b| b.rule.clone()),
        Some(limit(60))
    );
    assert_eq!(
        shared
            .bucket("GET", "/v1/campaigns/1")
            .map(|b| b.rule.clone()),
        Some(limit(120))
    );
}

#[test]
fn paths_outside_the_prefix_are_unlimited() {
    let t = table(DefaultBucket::Shared);
    for path in ["/", "/v2/campaigns", "/v10/campaigns", "/health"] {
        assert_eq!(route_id(&t, "GET", path), "unlimited", "{path}");
    }
    let everything = RouteTable::new("/".into(), vec![], limit(1), DefaultBucket::Shared);
    assert_eq!(route_id(&everything, "GET", "/anything"), "default");
    assert_eq!(route_id(&everything, "GET", "/"), "default");
}

#[test]
fn the_root_matches_its_template_under_the_prefix_slash() {
    let routes = [("GET", "/", 5), ("GET", "/:id", 7)]
        .into_iter()
        .map(|(m, p, n)| Route::new(m, Template::parse(p).unwrap(), limit(n)))
        .collect();
    let root = RouteTable::new("/".into(), routes, limit(1), DefaultBucket::Shared);
    assert_eq!(route_id(&root, "GET", "/"), "GET /");
    assert_eq!(route_id(&root, "GET", "/x"), "GET /:id");
    assert_eq!(route_id(&root, "GET", "/x/y"), "default");
    let v1 = table(DefaultBucket::Shared);
    assert_eq!(route_id(&v1, "GET", "/v1"), "default");
}

#[test]
fn methods_are_matched_case_insensitively() {
    assert_eq!(canonical_method("get"), "GET");
    assert_eq!(canonical_method("Options"), "OPTIONS");
    assert_eq!(canonical_method("PROPFIND"), "PROPFIND");
}

#[test]
fn rules_are_found_by_bucket_name() {
    let shared = table(DefaultBucket::Shared);
    assert_eq!(shared.rule_of("GET /campaigns/:id"), Some(&limit(120)));
    assert_eq!(shared.rule_of("default"), Some(&limit(60)));
    assert_eq!(shared.rule_of("default GET /v1/x"), None);
    assert_eq!(shared.rule_of("GET /gone"), None);
    let per_path = table(DefaultBucket::PerPath);
    assert_eq!(per_path.rule_of("default GET /v1/x"), Some(&limit(60)));
    assert_eq!(per_path.rule_of("default"), None);
    for path in [
        "/v1/campaigns/7",
        "/v1/zzz",
        &format!("/v1/{}", "y".repeat(300)),
    ] {
        let bucket = per_path.bucket("GET", path).unwrap();
        assert_eq!(per_path.rule_of(&bucket.name), Some(bucket.rule), "{path}");
    }
}

#[test]
fn per_path_names_are_bounded() {
    let per_path = table(DefaultBucket::PerPath);
    let long = format!("/v1/{}", "x".repeat(10_000));
    let name = route_id(&per_path, "GET", &long);
    assert!(name.len() <= MAX_PER_PATH_NAME, "{name}");
    assert!(name.starts_with("default #"), "{name}");
    let other = route_id(&per_path, "GET", &format!("{long}y"));
    assert_ne!(name, other, "different long paths stay different buckets");
    let long_method = route_id(&per_path, &"M".repeat(1000), "/v1/x");
    assert_eq!(long_method, "default OTHER /v1/x");
    assert_eq!(route_id(&per_path, "FOO2", "/v1/x"), long_method);
}

#[test]
fn templates_are_validated() {
    assert!(Template::parse("/a/:id/b").is_ok());
    assert_eq!(Template::parse("/").unwrap().to_string(), "/");
    assert!(matches!(
        Template::parse("a"),
        Err(TemplateError::NotAbsolute(_))
    ));
    assert!(matches!(
        Template::parse("/a//b"),
        Err(TemplateError::EmptySegment(_))
    ));
    assert!(matches!(
        Template::parse("/a/"),
        Err(TemplateError::EmptySegment(_))
    ));
    assert!(matches!(
        Template::parse("/a/:"),
        Err(TemplateError::BadParam(_))
    ));
    assert!(matches!(
        Template::parse("/a/:1x"),
        Err(TemplateError::BadParam(_))
    ));
    assert!(matches!(
        Template::parse("/a/b?c"),
        Err(TemplateError::BadLiteral(..))
    ));
    for bad in ["/a/../b", "/a;x", "/a b", "/ü", "/a*", "/a\\b", "/a%3a"] {
        assert!(
            matches!(Template::parse(bad), Err(TemplateError::BadLiteral(..))),
            "{bad}"
        );
    }
    assert_eq!(
        Template::parse("/Items:search").unwrap().to_string(),
        "/items:search"
    );
    let long = "/x".repeat(MAX_SEGMENTS + 1);
    assert!(matches!(
        Template::parse(&long),
        Err(TemplateError::TooLong(_))
    ));
    // Parameter names do not matter: these are the same template.
    assert_eq!(Template::parse("/C/:id"), Template::parse("/c/:cid"));
}
