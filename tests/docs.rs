//! The documentation stays true: its links lead somewhere, and the configuration keys it
//! documents are exactly the keys tollgate's parser accepts.
//!
//! - [`every_relative_link_resolves`]: every relative link in `README.md`, `CONTRIBUTING.md` and
//!   `docs/**/*.md` names a file or directory inside the repository, and every `#anchor` a
//!   heading of the target (GitHub's slugs).
//! - [`configuration_keys_are_the_parser_keys`]: three sets of keys must be equal: the keys of the
//!   reference table of `docs/configuration.md`, the keys its YAML blocks use (each block accepted
//!   by [`Config::from_yaml`]), and the keys the parser accepts, which the test asks the parser
//!   itself (see [`parser_keys`]): no hand-written list of keys to forget.

use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tollgate::config::{Config, Overrides};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files below `dir` (recursively) whose names end with one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, extensions, found);
        } else if extensions
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
        {
            found.push(path);
        }
    }
}

/// The documentation the tests hold to: the front door, the contributors' guide and `docs/`.
fn documentation() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    files_under(&root().join("docs"), &["md"], &mut files);
    files
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// A line without its inline code spans' backticks and contents, so that a link written inside
/// code (an example, not a link) is not taken for one. A link's text may be code itself:
/// ``[`a.md`](a.md)`` becomes `[](a.md)`.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    for (index, part) in line.split('`').enumerate() {
        if index % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The targets of the inline links (`[text](target)`, images too) of one line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                targets.push(after[..end].trim().to_owned());
                rest = &after[end..];
            }
            None => break,
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and `_` kept, spaces made
/// `-`, everything else dropped; a repeated heading gets `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(markdown) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

#[test]
fn every_relative_link_resolves() {
    let root = root().canonicalize().unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documentation() {
        let text = read(&file);
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let Ok(resolved) = resolved.canonicalize() else {
                    broken.push(format!("{name}:{number}: {target}: no such file"));
                    continue;
                };
                if !resolved.starts_with(&root) {
                    broken.push(format!("{name}:{number}: {target}: outside the repository"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    if resolved.extension().is_none_or(|e| e != "md") {
                        broken.push(format!(
                            "{name}:{number}: {target}: an anchor into a file that is not Markdown"
                        ));
                    } else if !anchors(&read(&resolved)).contains(anchor) {
                        broken.push(format!(
                            "{name}:{number}: {target}: no heading with the anchor #{anchor}"
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// One step of a key path: a key of a mapping, an item of a list, or an entry of a mapping whose
/// keys are names (plans).
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Item,
    Name,
}

/// The name the probe gives a named entry.
const PROBE_NAME: &str = "tollgate-docs-probe";

/// A key no mapping of the configuration takes: where the parser reports it as unknown, it reads
/// a mapping.
const NOT_A_KEY: &str = "tollgate-docs-not-a-key";

/// How the reference table names a mapping that appears in several places: a limit is written
/// `limit.requests` wherever it is (`default_limit`, `default_limits`, a route's `limit` or
/// `limits`, in a plan or not), a route `routes[].cost` (top level or in a plan). A mapping in a
/// new place gets its own full name, so a new place is documented (or named here) or fails.
const SHAPES: &[(&str, &str)] = &[
    ("limit", "limit"),
    ("limits[]", "limit"),
    ("default_limit", "limit"),
    ("default_limits[]", "limit"),
    ("routes[]", "routes[]"),
];

/// The documented name of the mapping reached by `path`.
fn mapping_name(path: &[Step]) -> String {
    let mut name = String::new();
    for step in path {
        match step {
            Step::Key(key) if name.is_empty() => name.push_str(key),
            Step::Key(key) => {
                name.push('.');
                name.push_str(key);
            }
            Step::Item => name.push_str("[]"),
            Step::Name => name.push_str(".<name>"),
        }
        let last = name.rsplit('.').next().unwrap_or_default();
        if let Some((_, shape)) = SHAPES.iter().find(|(place, _)| *place == last) {
            name = (*shape).to_owned();
        }
    }
    name
}

/// The documented name of `key` in the mapping reached by `path`.
fn key_name(path: &[Step], key: &str) -> String {
    match mapping_name(path) {
        parent if parent.is_empty() => key.to_owned(),
        parent => format!("{parent}.{key}"),
    }
}

/// Words that could be keys: every word of tollgate's source (identifiers and the text of string
/// literals, so a `#[serde(rename = "...")]` or a key read by hand is among them), also written
/// with `-` for `_` and in camelCase, as a serde `rename_all` would.
fn candidate_keys() -> BTreeSet<String> {
    let mut sources = Vec::new();
    files_under(&root().join("src"), &["rs", "yaml"], &mut sources);
    let mut words = BTreeSet::new();
    for source in sources {
        for word in
            read(&source).split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            let word = word.trim_matches('-');
            if word.starts_with(|c: char| c.is_ascii_alphabetic()) {
                words.insert(word.to_owned());
                if word.contains('_') {
                    words.insert(word.replace('_', "-"));
                    let mut camel = String::new();
                    let mut upper = false;
                    for c in word.chars() {
                        match c {
                            '_' => upper = true,
                            c if upper => {
                                camel.push(c.to_ascii_uppercase());
                                upper = false;
                            }
                            c => camel.push(c),
                        }
                    }
                    words.insert(camel);
                }
            }
        }
    }
    words
}

/// The configuration problems of a YAML document.
fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, "docs", &Overrides::default()) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems,
    }
}

/// The keys the parser reports as unknown (`...: unknown key K`).
fn unknown_keys(problems: &[String]) -> BTreeSet<String> {
    problems
        .iter()
        .filter_map(|p| p.rsplit_once("unknown key ").map(|(_, key)| key.to_owned()))
        .collect()
}

/// Which `candidates` the parser accepts in a mapping at `path`, or `None` when no mapping there
/// takes keys (nothing there is a mapping, or its keys are names): a document with every
/// candidate key, each `null` (absent to serde), at `path` and nothing else; the keys the parser
/// does not report as unknown are the ones it reads.
fn accepted_at(path: &[Step], candidates: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    let mut value = Value::Mapping(
        candidates
            .iter()
            .map(|key| (Value::String(key.clone()), Value::Null))
            .collect(),
    );
    for step in path.iter().rev() {
        value = match step {
            Step::Key(key) => Value::Mapping(Mapping::from_iter([(key.as_str().into(), value)])),
            Step::Item => Value::Sequence(vec![value]),
            Step::Name => Value::Mapping(Mapping::from_iter([(PROBE_NAME.into(), value)])),
        };
    }
    let yaml = serde_yaml::to_string(&value).unwrap();
    let refused = unknown_keys(&problems(&yaml));
    if refused.is_disjoint(candidates) {
        return None;
    }
    Some(candidates.difference(&refused).cloned().collect())
}

/// The keys the parser accepts, by their documented names, and the documented names of the keys
/// whose values are named entries (`plans`).
///
/// Asked of the parser itself, not read from a list: the probe offers every word of the source
/// (see [`candidate_keys`]) as a key of the top-level mapping; those the parser does not report
/// as unknown are its keys. Then, under each accepted key, it offers them again as a mapping, as
/// a list of mappings and as named entries of mappings (first with one key that is no key, to
/// learn whether a mapping is read there at all), and so on down: wherever the parser reads a
/// mapping, the probe finds its keys. A field added to the serde structs of `src/config/raw.rs`
/// (or a key read any other way) is found without anyone listing it, so it fails this test until
/// `docs/configuration.md` documents it; a removed one fails while the page still has it.
fn parser_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let candidates = candidate_keys();
    let not_a_key = BTreeSet::from([NOT_A_KEY.to_owned()]);
    let mut keys = BTreeSet::new();
    let mut named = BTreeSet::new();
    let mut pending: Vec<Vec<Step>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        assert!(path.len() < 12, "the probe went too deep: {path:?}");
        let accepted = accepted_at(&path, &candidates)
            .unwrap_or_else(|| panic!("no mapping at {path:?}, where the probe found one"));
        for key in accepted {
            keys.insert(key_name(&path, &key));
            let under = |shape: &[Step]| {
                let mut child = path.clone();
                child.push(Step::Key(key.clone()));
                child.extend_from_slice(shape);
                child
            };
            for child in [under(&[]), under(&[Step::Item]), under(&[Step::Name])] {
                if accepted_at(&child, &not_a_key).is_some() {
                    if matches!(child.last(), Some(Step::Name)) {
                        named.insert(key_name(&path, &key));
                        keys.insert(mapping_name(&child));
                    }
                    pending.push(child);
                }
            }
        }
    }
    (keys, named)
}

/// The documented names of every key a YAML value uses, `path` being where it is.
fn yaml_keys(value: &Value, path: &[Step], named: &BTreeSet<String>, keys: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(mapping) => {
            for (key, value) in mapping {
                let key = key.as_str().expect("keys are strings");
                let name = key_name(path, key);
                let mut child = path.to_vec();
                child.push(Step::Key(key.to_owned()));
                if named.contains(&name) {
                    child.push(Step::Name);
                    keys.insert(mapping_name(&child));
                    for value in value.as_mapping().into_iter().flat_map(|m| m.values()) {
                        yaml_keys(value, &child, named, keys);
                    }
                } else {
                    yaml_keys(value, &child, named, keys);
                }
                keys.insert(name);
            }
        }
        Value::Sequence(items) => {
            let mut child = path.to_vec();
            child.push(Step::Item);
            for item in items {
                yaml_keys(item, &child, named, keys);
            }
        }
        _ => {}
    }
}

/// The YAML blocks of a Markdown text.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim() == "```yaml" => current = Some(String::new()),
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The keys of the reference table: the first column of the table under `## Reference`, one key
/// in backticks per row.
fn table_keys(markdown: &str) -> BTreeSet<String> {
    let section = markdown
        .split("\n## Reference\n")
        .nth(1)
        .expect("docs/configuration.md has a `## Reference` section");
    let section = section.split("\n## ").next().unwrap();
    let mut keys = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with('|')).skip(2) {
        let cell = row.split('|').nth(1).unwrap().trim();
        let key = cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|k| !k.contains('`'))
            .unwrap_or_else(|| panic!("a reference row names one key in backticks: {row}"));
        assert!(keys.insert(key.to_owned()), "{key} is documented twice");
    }
    keys
}

fn difference(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

#[test]
fn configuration_keys_are_the_parser_keys() {
    let page = read(&root().join("docs/configuration.md"));
    let (parser, named) = parser_keys();
    let table = table_keys(&page);

    let mut used = BTreeSet::new();
    let blocks = yaml_blocks(&page);
    assert!(
        !blocks.is_empty(),
        "docs/configuration.md has no YAML block"
    );
    for block in &blocks {
        // Every example is a configuration tollgate accepts, but for the files it names, which
        // exist where it is deployed.
        let refused: Vec<String> = problems(block)
            .into_iter()
            .filter(|p| {
                !(p.starts_with("admin.token_file: cannot read ")
                    || p.starts_with("redis.tls_ca_file: cannot read "))
            })
            .collect();
        assert!(
            refused.is_empty(),
            "a YAML block of docs/configuration.md is refused: {refused:#?}\n{block}"
        );
        let value: Value = serde_yaml::from_str(block).unwrap();
        yaml_keys(&value, &[], &named, &mut used);
    }

    assert!(
        parser == table,
        "docs/configuration.md's reference table and the parser disagree\n\
         accepted but not documented: {:?}\ndocumented but not accepted: {:?}",
        difference(&parser, &table),
        difference(&table, &parser),
    );
    assert!(
        used == table,
        "docs/configuration.md's YAML blocks and its reference table disagree\n\
         in no YAML block: {:?}\nnot in the table: {:?}",
        difference(&table, &used),
        difference(&used, &table),
    );
}
