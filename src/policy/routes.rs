//! Route templates and the precompiled table that maps a request to its bucket.

use crate::api_key::KeyDigest;
use crate::policy::limit::Rule;
use crate::policy::path::is_plain;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Methods a route may declare. `HEAD` is checked as `GET` and `OPTIONS` is never counted, so
/// neither can be declared.
pub const DECLARABLE_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One `/`-separated piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this (lower-case) text.
    Literal(Box<str>),
    /// `:name`: matches any one segment.
    Param,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Does not start with `/`.
    #[error("path template {0:?} must start with '/'")]
    NotAbsolute(String),
    /// `//` or a trailing slash.
    #[error("path template {0:?} has an empty segment ('//' or a trailing '/')")]
    EmptySegment(String),
    /// `:` without a valid name.
    #[error("path template {0:?} has a parameter without a name; write ':id'")]
    BadParam(String),
    /// More segments than [`MAX_SEGMENTS`].
    #[error("path template {0:?} has more than {MAX_SEGMENTS} segments")]
    TooLong(String),
    /// Characters that normalisation would remove or that a normalised path never contains.
    #[error(
        "path template {0:?} has segment {1:?}, which no normalised path contains (printable ASCII only; no '.', '..', '?', '#', '%', ';', '*' or '\\\\')"
    )]
    BadLiteral(String, String),
}

/// A parsed path template such as `/campaigns/:id`, relative to the path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a template. Literals are lower-cased, since paths are matched after normalisation.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| TemplateError::NotAbsolute(text.to_owned()))?;
        if rest.is_empty() {
            return Ok(Self {
                segments: Vec::new(),
            });
        }
        let segments: Vec<Segment> = rest
            .split('/')
            .map(|segment| parse_segment(text, segment))
            .collect::<Result<_, _>>()?;
        if segments.len() > MAX_SEGMENTS {
            return Err(TemplateError::TooLong(text.to_owned()));
        }
        Ok(Self { segments })
    }

    /// Ordering key: literals before parameters, position by position, so the most specific of
    /// several matching templates comes first.
    fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Param))
            .collect()
    }

    /// Whether the template matches a path already split into its segments.
    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(template, segment)| match template {
                    Segment::Literal(want) => **want == **segment,
                    Segment::Param => true,
                })
    }
}

fn parse_segment(text: &str, segment: &str) -> Result<Segment, TemplateError> {
    if segment.is_empty() {
        return Err(TemplateError::EmptySegment(text.to_owned()));
    }
    if let Some(name) = segment.strip_prefix(':') {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if valid {
            Ok(Segment::Param)
        } else {
            Err(TemplateError::BadParam(text.to_owned()))
        };
    }
    if segment == "." || segment == ".." || !segment.bytes().all(|b| is_plain(b) && b != b'*') {
        return Err(TemplateError::BadLiteral(
            text.to_owned(),
            segment.to_owned(),
        ));
    }
    Ok(Segment::Literal(segment.to_ascii_lowercase().into()))
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => write!(f, "/{text}")?,
                Segment::Param => f.write_str("/:id")?,
            }
        }
        Ok(())
    }
}

/// A declared route: method, template and its rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// `GET /campaigns/:id`: the bucket name, shared by every concrete path the template matches.
    pub id: Arc<str>,
    /// Upper-case method.
    pub method: String,
    /// The parsed template.
    pub template: Template,
    /// The windows, cost and mode of this route.
    pub rule: Rule,
}

impl Route {
    /// A route; `method` must be one of [`DECLARABLE_METHODS`].
    pub fn new(method: &str, template: Template, rule: Rule) -> Self {
        let method = method.to_ascii_uppercase();
        Self {
            id: format!("{method} {template}").into(),
            method,
            template,
            rule,
        }
    }
}

/// How requests under the prefix that match no declared route are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultBucket {
    /// One bucket per API key for all undeclared requests: varying ids cannot mint buckets.
    #[default]
    Shared,
    /// One bucket per API key, method and normalised path.
    PerPath,
}

/// Which entry of the route table a bucket comes from: a bounded set, unlike bucket names, so
/// metrics can be labelled by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRef {
    /// The declared route at this index of [`RouteTable::routes`].
    Declared(usize),
    /// The shared bucket of undeclared requests.
    Default,
    /// One of the per-path buckets of undeclared requests (`default_bucket: per_path`).
    PerPath,
    /// The quota endpoint's own bucket (`quota_endpoint`), which the configuration adds beside
    /// the table.
    Quota,
}

/// The bucket a request is counted in, and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket<'a> {
    /// A declared route's id (`GET /campaigns/:id`), or `default`, or per path
    /// `default GET /v1/x/y`.
    pub name: Cow<'a, str>,
    /// The windows, cost and mode of the bucket.
    pub rule: &'a Rule,
    /// The table entry that chose the bucket.
    pub route: RouteRef,
}

/// Paths longer than this many segments are never split for matching; no template may be longer.
pub const MAX_SEGMENTS: usize = 32;

/// All routes, sorted so that the first match is the most specific one.
#[derive(Debug, Clone)]
pub struct RouteTable {
    prefix: String,
    routes: Vec<Route>,
    /// Segments of the longest template: a longer path matches no route.
    longest: usize,
    default_rule: Rule,
    default_bucket: DefaultBucket,
}

impl RouteTable {
    /// Builds the table. `prefix` is a normalised path (`/v1`, or `/` for none); duplicates must
    /// have been refused by the caller ([`Template`] equality tells them apart).
    pub fn new(
        prefix: String,
        mut routes: Vec<Route>,
        default_rule: Rule,
        default_bucket: DefaultBucket,
    ) -> Self {
        routes.sort_by_cached_key(|r| r.template.specificity());
        let prefix = if prefix == "/" { String::new() } else { prefix };
        let longest = routes
            .iter()
            .map(|r| r.template.segments.len())
            .max()
            .unwrap_or(0);
        Self {
            prefix,
            routes,
            longest,
            default_rule,
            default_bucket,
        }
    }

    /// The path prefix without a trailing slash: `/v1`, or empty for `/`, so that it can be put
    /// before a template.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The declared routes, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The rule of requests that match no declared route.
    pub fn default_rule(&self) -> &Rule {
        &self.default_rule
    }

    /// How undeclared requests are bucketed.
    pub fn default_bucket(&self) -> DefaultBucket {
        self.default_bucket
    }

    /// The rule this table gives the bucket named `name` (as [`RouteTable::bucket`] names them),
    /// or `None` when no request can fall in it any more.
    pub fn rule_of(&self, name: &str) -> Option<&Rule> {
        match name {
            "default" => {
                (self.default_bucket == DefaultBucket::Shared).then_some(&self.default_rule)
            }
            per_path if per_path.starts_with("default ") => {
                (self.default_bucket == DefaultBucket::PerPath).then_some(&self.default_rule)
            }
            id => self.routes.iter().find(|r| &*r.id == id).map(|r| &r.rule),
        }
    }

    /// Finds the bucket of a request, or `None` outside the prefix (not rate limited). `method`
    /// is upper-case with `HEAD` already mapped to `GET`; `path` is normalised.
    pub fn bucket(&self, method: &str, path: &str) -> Option<Bucket<'_>> {
        let rest = match path.strip_prefix(self.prefix.as_str())? {
            // The root itself, under the prefix `/`.
            "/" => "",
            rest if rest.is_empty() || rest.starts_with('/') => rest,
            _ => return None,
        };
        // Split once, on the stack; a normalised path has no empty segments.
        let mut segments = [""; MAX_SEGMENTS];
        let mut count = 0;
        for segment in rest.split('/').skip(1) {
            if count == self.longest {
                count = usize::MAX;
                break;
            }
            segments[count] = segment;
            count += 1;
        }
        let matched = (count != usize::MAX)
            .then(|| {
                let segments = &segments[..count];
                self.routes
                    .iter()
                    .position(|r| r.method == method && r.template.matches(segments))
            })
            .flatten();
        Some(match (matched, self.default_bucket) {
            (Some(index), _) => {
                let route = &self.routes[index];
                Bucket {
                    name: Cow::Borrowed(&*route.id),
                    rule: &route.rule,
                    route: RouteRef::Declared(index),
                }
            }
            (None, DefaultBucket::Shared) => Bucket {
                name: Cow::Borrowed("default"),
                rule: &self.default_rule,
                route: RouteRef::Default,
            },
            (None, DefaultBucket::PerPath) => Bucket {
                name: Cow::Owned(per_path_name(method, path)),
                rule: &self.default_rule,
                route: RouteRef::PerPath,
            },
        })
    }
}

/// The methods HTTP defines; others are counted, but never named apart.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The upper-case spelling of a standard method, so `get` cannot reach a looser bucket than `GET`.
pub fn canonical_method(method: &str) -> &str {
    STANDARD_METHODS
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or(method)
}

/// Bucket names of undeclared requests longer than this are replaced by a digest, so a client
/// that sends long paths cannot make tollgate or Redis keep long names.
pub const MAX_PER_PATH_NAME: usize = 128;

/// `default GET /v1/x/y`, or `default #<128-bit digest of that>` when it is longer than
/// [`MAX_PER_PATH_NAME`] (methods are client-chosen text too).
fn per_path_name(method: &str, path: &str) -> String {
    // A method outside the standard ones is client-chosen text: all of them share one name, so
    // inventing methods cannot mint buckets.
    let method = if STANDARD_METHODS.contains(&method) {
        method
    } else {
        "OTHER"
    };
    let name = format!("default {method} {path}");
    if name.len() <= MAX_PER_PATH_NAME {
        return name;
    }
    format!("default #{}", KeyDigest::of(&name).as_str())
}

#[cfg(test)]
mod tests;
