//! Hot reload with the real binary under continuous checks: a file rewritten in place (applied
//! only once it stops changing), a file renamed into place, a Kubernetes ConfigMap update (a
//! `..data` symlink swapped), a broken file, an empty one, a setting that needs a restart, and
//! SIGHUP for a change the watcher cannot see.

mod common;

use common::process::TollgateProcess;
use common::{check, free_port, unique_key};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A configuration whose one route admits `limit` per second: far more than the load sends, so
/// every answer is a 200 that shows the limit in force.
fn yaml(limit: u32) -> String {
    format!(
        "drain_period: 0s\nroutes:\n  - {{ method: GET, path: /live, limit: {{ requests: {limit}, window: 1s }} }}\n"
    )
}

/// Checks sent one after another until stopped; every answer's `x-ratelimit-limit` is recorded,
/// and anything that is not a 200 with that header fails the test.
struct Load {
    limits: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Load {
    async fn start(port: u16) -> Self {
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let limits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let key = unique_key("reload");
        let task = tokio::spawn({
            let (limits, stop) = (limits.clone(), stop.clone());
            async move {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let answer = check(&mut client, "GET", "/v1/live", Some(&key)).await;
                    assert_eq!(
                        answer.status, 200,
                        "a check failed during a reload: {answer:?}"
                    );
                    let limit = answer.number("x-ratelimit-limit");
                    limits.lock().unwrap().push((Instant::now(), limit));
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                sent
            }
        });
        Self { limits, stop, task }
    }

    /// How long after `since` the answers first showed `limit`.
    async fn wait_for_limit(&self, limit: u64, since: Instant) -> Duration {
        let deadline = since + Duration::from_secs(5);
        loop {
            let seen = self
                .limits
                .lock()
                .unwrap()
                .iter()
                .find(|(at, l)| *at >= since && *l == limit)
                .map(|(at, _)| *at - since);
            if let Some(after) = seen {
                return after;
            }
            assert!(
                Instant::now() < deadline,
                "limit {limit} never showed; last answers: {:?}",
                self.limits
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every limit shown since `since`.
    fn limits_since(&self, since: Instant) -> Vec<u64> {
        let mut limits: Vec<u64> = (self.limits.lock().unwrap().iter())
            .filter(|(at, _)| *at >= since)
            .map(|(_, l)| *l)
            .collect();
        limits.dedup();
        limits
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("no check failed")
    }
}

/// Waits until the binary's watcher runs: a change made before it would be caught up at its start,
/// not by the mechanism a test means to exercise.
async fn wait_for_watcher(tollgate: &TollgateProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tollgate
        .log()
        .contains("reloading the configuration on change and on SIGHUP")
    {
        assert!(Instant::now() < deadline, "no watcher:\n{}", tollgate.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A directory laid out as Kubernetes mounts a ConfigMap: `tollgate.yaml` → `..data/tollgate.yaml`,
/// `..data` → `..<version>`, replaced by renaming a new symlink over it.
struct ConfigMapDir {
    dir: tempfile::TempDir,
    version: u32,
}

impl ConfigMapDir {
    fn new(text: &str) -> Self {
        let mut configmap = Self {
            dir: common::temp::dir(),
            version: 0,
        };
        configmap.update(text);
        std::os::unix::fs::symlink("..data/tollgate.yaml", configmap.file()).unwrap();
        configmap
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("tollgate.yaml")
    }

    /// What the kubelet does: a new timestamped directory, then an atomic swap of `..data`.
    fn update(&mut self, text: &str) {
        self.version += 1;
        let dir = self.dir.path();
        let version = format!("..2026_11_28_{:02}", self.version);
        std::fs::create_dir(dir.join(&version)).unwrap();
        std::fs::write(dir.join(&version).join("tollgate.yaml"), text).unwrap();
        let staged = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, dir.join("..data")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_applies_within_two_seconds_and_a_broken_one_is_refused() {
    let mut configmap = ConfigMapDir::new(&yaml(1000));
    let port = free_port();
    let tollgate = TollgateProcess::start_file(&configmap.file(), port);
    wait_for_watcher(&tollgate).await;
    let load = Load::start(port).await;
    load.wait_for_limit(1000, Instant::now()).await;

    let swapped = Instant::now();
    configmap.update(&yaml(2000));
    let after = load.wait_for_limit(2000, swapped).await;
    println!("ConfigMap update: new limit in the headers {after:?} after the swap");
    assert!(after <= Duration::from_secs(2), "{after:?}");

    // A broken file: every problem is logged, the old limit keeps applying.
    let broken = Instant::now();
    configmap.update(
        "routes:\n  - { method: GET, path: /live, limit: { requests: 0, window: 1s } }\nlisten_typo: x\n",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load.limits_since(broken), vec![2000]);
    let log = tollgate.log();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains("listen_typo"), "{log}");
    assert!(log.contains("requests"), "{log}");

    // An empty file swapped in (a ConfigMap key emptied) is refused, and counted, at once.
    let emptied = Instant::now();
    configmap.update("---\n");
    let after = wait_for_reloads(&tollgate, "refused", 2, emptied).await;
    println!("ConfigMap swapped to an empty file: refused {after:?} later");
    assert_eq!(load.limits_since(emptied), vec![2000]);
    assert!(tollgate.log().contains("holds no settings"));

    // A setting that needs a restart is reported; the rest applies.
    let restart = Instant::now();
    configmap.update(&format!("max_request_bytes: 65536\n{}", yaml(3000)));
    load.wait_for_limit(3000, restart).await;
    let log = tollgate.log();
    assert!(
        log.lines()
            .any(|l| l.contains("only apply after a restart") && l.contains("max_request_bytes")),
        "{log}"
    );

    let sent = load.stop().await;
    println!("{sent} checks answered during the reloads, none failed");
    assert!(sent > 20, "the load ran throughout: {sent}");
}

/// `tollgate_config_reloads_total{result}` as the binary's metrics show it now.
async fn reloads(tollgate: &TollgateProcess, result: &str) -> u64 {
    let series = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
    tollgate
        .metric(&series)
        .await
        .unwrap_or_else(|| panic!("no {series}"))
}

/// Waits until the binary has counted `count` reloads with `result`, and returns how long that
/// took from `since`.
async fn wait_for_reloads(
    tollgate: &TollgateProcess,
    result: &str,
    count: u64,
    since: Instant,
) -> Duration {
    loop {
        let counted = reloads(tollgate, result).await;
        if counted >= count {
            assert_eq!(counted, count, "{result}: one reload per change");
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{counted} of {count} reloads {result}:\n{}",
            tollgate.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file rewritten in place (same inode) in two writes 400 ms apart, the first half being a
/// valid configuration of its own: only the whole file applies, once it has stopped changing. A
/// file renamed into place (a new inode, written completely before) applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_applies_only_once_it_stops_changing() {
    use std::io::Write;
    let dir = common::temp::dir();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, yaml(1000)).unwrap();
    let port = free_port();
    let tollgate = TollgateProcess::start_file(&file, port);
    wait_for_watcher(&tollgate).await;
    let load = Load::start(port).await;
    load.wait_for_limit(1000, Instant::now()).await;

    // The first half alone is valid: /live in the default bucket, at 1500 a second.
    let first_half = "drain_period: 0s\ndefault_limit: { requests: 1500, window: 1s }\n";
    let second_half =
        "routes:\n  - { method: GET, path: /live, limit: { requests: 2000, window: 1s } }\n";
    let started = Instant::now();
    std::fs::write(&file, first_half).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    append.write_all(second_half.as_bytes()).unwrap();
    drop(append);
    let completed = Instant::now();
    let after = load.wait_for_limit(2000, completed).await;
    println!(
        "file rewritten in place in two writes 400 ms apart: the whole file in the headers {after:?} after the second write"
    );
    assert_eq!(
        load.limits_since(started),
        vec![1000, 2000],
        "the half-written file never applied"
    );
    assert!(after <= Duration::from_secs(3), "{after:?}");
    assert_eq!(reloads(&tollgate, "applied").await, 1);

    // An editor's save: a complete new file renamed over the old one.
    let staged = dir.path().join(".tollgate.yaml.swp");
    std::fs::write(&staged, yaml(2500)).unwrap();
    let renamed = Instant::now();
    std::fs::rename(&staged, &file).unwrap();
    let after = load.wait_for_limit(2500, renamed).await;
    println!("file renamed into place: new limit in the headers {after:?} later");
    // Under the in-place settle (1 s): a new file is not waited for.
    assert!(after <= Duration::from_millis(900), "{after:?}");
    let sent = load.stop().await;
    println!("{sent} checks answered, none with the half-written file's limit");
}

/// A file truncated, emptied to whitespace or comments, or left with a lone `---` in place holds
/// no settings: every such reload is refused and counted, and the operator's limit keeps showing.
/// (The ConfigMap test swaps in an empty file too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_and_the_running_limits_stay() {
    let dir = common::temp::dir();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, yaml(1000)).unwrap();
    let port = free_port();
    let tollgate = TollgateProcess::start_file(&file, port);
    wait_for_watcher(&tollgate).await;
    let load = Load::start(port).await;
    load.wait_for_limit(1000, Instant::now()).await;
    let started = Instant::now();

    let mut refused = 0;
    for empty in ["", " \n   \n\n", "# routes: removed for now\n", "---\n"] {
        let written = Instant::now();
        std::fs::write(&file, empty).unwrap();
        refused += 1;
        let after = wait_for_reloads(&tollgate, "refused", refused, written).await;
        println!("file rewritten in place to {empty:?}: refused {after:?} later");
    }
    assert_eq!(load.limits_since(started), vec![1000]);
    assert_eq!(reloads(&tollgate, "applied").await, 0);
    let log = tollgate.log();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains("holds no settings"), "{log}");

    // Refusals leave the watcher working: the next real file applies.
    let fixed = Instant::now();
    std::fs::write(&file, yaml(1200)).unwrap();
    load.wait_for_limit(1200, fixed).await;
    assert_eq!(reloads(&tollgate, "applied").await, 1);
    let sent = load.stop().await;
    println!("{sent} checks answered, none failed and none without the operator's limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_change_the_watcher_cannot_see() {
    // The configuration is a symlink into another directory, which is not watched.
    let (outside, watched) = (common::temp::dir(), common::temp::dir());
    let real = outside.path().join("real.yaml");
    std::fs::write(&real, yaml(1000)).unwrap();
    let link = watched.path().join("tollgate.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let port = free_port();
    let tollgate = TollgateProcess::start_file(&link, port);
    wait_for_watcher(&tollgate).await;
    let load = Load::start(port).await;
    load.wait_for_limit(1000, Instant::now()).await;

    let edited = Instant::now();
    std::fs::write(&real, yaml(1200)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        load.limits_since(edited),
        vec![1000],
        "the watched directory saw nothing"
    );
    let signalled = Instant::now();
    tollgate.sighup();
    let after = load.wait_for_limit(1200, signalled).await;
    println!("SIGHUP: new limit in the headers {after:?} later");
    assert!(after <= Duration::from_secs(2), "{after:?}");
    load.stop().await;
}
