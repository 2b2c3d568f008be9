//! Redis AUTH and ACL users: passwords in the URL are used, a failed AUTH is retried until it
//! succeeds, and no password reaches a log line or `check-config`'s output.

mod common;

use common::{RedisServer, Tollgate, check, unique_key};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate::config::Config;

const ROUTES: &str =
    "routes:\n  - { method: GET, path: /items/:id, limit: { requests: 1000, window: 60s } }\n";

fn config_for(url: &str) -> Config {
    let yaml = format!("redis: {{ url: \"{url}\", timeout: 1s }}\n{ROUTES}");
    common::config(&yaml)
}

fn config_set_requirepass(connection: &mut redis::Connection, password: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query(connection)
        .unwrap();
}

/// Closes every client connection but the caller's, as a Redis restart or a proxy would.
fn kill_clients(connection: &mut redis::Connection) {
    let _: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(connection)
        .unwrap();
}

/// Whether Redis counted a check of a fresh key.
async fn counted(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>,
) -> bool {
    let answer = check(client, "GET", "/v1/items/1", Some(&unique_key("auth"))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.has_rate_limit_headers()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_that_fails_auth_keeps_retrying_until_the_password_is_right_again() {
    let redis = RedisServer::start();
    let mut control = redis.connection();
    config_set_requirepass(&mut control, "first-pass");
    let tollgate = Tollgate::start(config_for(&format!(
        "redis://:first-pass@127.0.0.1:{}",
        redis.port
    )))
    .await;
    let mut client = tollgate.client().await;
    assert!(
        counted(&mut client).await,
        "authenticated with the URL's password"
    );

    // The password changes and every connection drops: tollgate's reconnects fail AUTH.
    config_set_requirepass(&mut control, "second-pass");
    kill_clients(&mut control);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(!counted(&mut client).await, "fails open while AUTH fails");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The password is back: tollgate authenticates again, without a restart.
    config_set_requirepass(&mut control, "first-pass");
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(5);
    loop {
        if counted(&mut client).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still failing AUTH 5 s after the password was restored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "AUTH works again {:?} after the password was restored",
        restored.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_a_password_is_used_and_a_wrong_one_fails_open() {
    let redis = RedisServer::start();
    let mut control = redis.connection();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "tollgate", "on", ">s3cret/pw", "~*", "+@all"])
        .query(&mut control)
        .unwrap();
    // Without a password nothing works: only the ACL user can count.
    config_set_requirepass(&mut control, "admin-pass");

    // `/` in a password is percent-encoded in the URL.
    let url = format!("redis://tollgate:s3cret%2Fpw@127.0.0.1:{}", redis.port);
    let tollgate = Tollgate::start(config_for(&url)).await;
    let mut client = tollgate.client().await;
    assert!(counted(&mut client).await, "the ACL user counts");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut control)
        .unwrap();
    assert!(
        clients.contains("user=tollgate"),
        "tollgate is connected as its ACL user:\n{clients}"
    );

    let wrong = format!("redis://tollgate:wrong@127.0.0.1:{}", redis.port);
    let refused = Tollgate::start(config_for(&wrong)).await;
    let mut client = refused.client().await;
    assert!(!counted(&mut client).await, "a wrong password fails open");
}

fn redis_yaml(url: &str) -> String {
    format!("drain_period: 0s\nredis: {{ url: '{url}', timeout: 100ms }}\n")
}

/// `check-config`'s whole output (stdout and stderr) for a configuration with `url`.
fn check_config_output(url: &str) -> String {
    let file = common::temp::yaml_file(&redis_yaml(url));
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("check-config")
        .arg(file.path())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The binary's whole log when it serves with `url`, up to its warning that Redis cannot be
/// used (which carries the Redis error) or its refusal of the configuration.
fn serving_log(url: &str) -> String {
    let file = common::temp::yaml_file(&redis_yaml(url));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(file.path())
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("cannot load the quota script") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    reader.join().unwrap();
    log.extend(rx.try_iter().map(|line| line + "\n"));
    log
}

#[test]
fn no_password_reaches_check_config_or_the_log_whatever_the_url_form() {
    // A server that refuses every password: the log carries Redis's AUTH error.
    let redis = RedisServer::start();
    config_set_requirepass(&mut redis.connection(), "the-real-one");
    let port = redis.port;
    let socket_dir = common::temp::dir();
    let socket = socket_dir.path().join("no-redis.sock");
    let cases = [
        // (URL, the secret as it appears in the URL, decoded)
        (
            format!("redis://:Sekr1t%2Fone@127.0.0.1:{port}"),
            vec!["Sekr1t%2Fone", "Sekr1t/one"],
        ),
        (
            format!("redis://app:Sekr1t-two@127.0.0.1:{port}/0"),
            vec!["Sekr1t-two"],
        ),
        (
            format!("redis+unix://{}?pass=Sekr1t-three", socket.display()),
            vec!["Sekr1t-three"],
        ),
        // Raw `/` and `@`: not a URL redis-rs can parse; refused, and still not printed.
        (
            format!("redis://:Sek/r1t@four@127.0.0.1:{port}"),
            vec!["Sek/r1t", "r1t@four", "Sek"],
        ),
    ];
    for (url, secrets) in &cases {
        let checked = check_config_output(url);
        let served = serving_log(url);
        assert!(
            checked.contains("***"),
            "check-config shows the URL, redacted:\n{checked}"
        );
        assert!(
            served.contains("***"),
            "the log shows the URL, redacted:\n{served}"
        );
        for secret in secrets {
            assert!(
                !checked.contains(secret),
                "check-config printed {secret:?} of {url}:\n{checked}"
            );
            assert!(
                !served.contains(secret),
                "the log carries {secret:?} of {url}:\n{served}"
            );
        }
    }
}
