//! The Redis ceiling: the check without tollgate, called as tollgate calls it on Redis 7 (`FCALL`
//! of its function), through redis-benchmark and through redis-rs connections.

use crate::measure::{Keys, Outcome, Tally, drive};
use crate::redis_server::RedisServer;
use crate::{Options, Shape};
use std::process::Command;
use std::sync::Arc;

/// Loads tollgate's check function on `redis`; its name.
fn load_function(redis: &RedisServer) -> String {
    let (library, function) = tollgate::store::check_function();
    let _: redis::Value = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query(&mut redis.connection())
        .unwrap();
    function
}

/// Whether a check's reply (doubles packed in a string, `src/store/check.lua`) admitted it.
fn admitted(packed: &[u8]) -> bool {
    packed.get(..8) == Some(&1f64.to_be_bytes()[..])
}

/// The yardstick: `redis-benchmark` calling the same function with `FCALL`, one client per
/// caller, no pipelining, random keys from the same key space. Returns calls per second.
pub fn redis_benchmark(redis: &RedisServer, shape: Shape, o: &Options) -> f64 {
    let function = load_function(redis);
    let key = if shape.keys == 1 {
        "tollgate:ring:{bench-key-0}:GET /bench/:id".to_owned()
    } else {
        "tollgate:ring:{bench-key-__rand_int__}:GET /bench/:id".to_owned()
    };
    // About as many calls as the measurement window lasts at 40k/s.
    let calls = (o.duration.as_secs_f64() * 40_000.0) as u64;
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port.to_string(),
            "-c",
            &shape.callers.to_string(),
        ])
        .args([
            "-n",
            &calls.to_string(),
            "-r",
            &shape.keys.to_string(),
            "--csv",
        ])
        .args([
            "FCALL",
            &function,
            "1",
            &key,
            "1",
            "0",
            &shape.limit.to_string(),
            "60000",
            &shape.limit.to_string(),
            "60000000",
        ])
        .output()
        .expect("redis-benchmark (installed with redis-server)");
    let csv = String::from_utf8(output.stdout).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("\"FCALL"))
        .unwrap_or_else(|| panic!("redis-benchmark: {csv}"));
    row.split("\",\"").nth(1).unwrap().parse().unwrap()
}

/// The check's function driven directly over multiplexed connections (or a deadpool-redis pool),
/// the way tollgate drives it.
pub async fn redis_ceiling(redis: &RedisServer, shape: Shape, o: &Options, pooled: bool) -> Tally {
    let function: Arc<str> = load_function(redis).into();
    let client = redis::Client::open(redis.url()).unwrap();
    enum Conns {
        Multiplexed(Vec<redis::aio::MultiplexedConnection>),
        Pool(deadpool_redis::Pool),
    }
    let conns = Arc::new(if pooled {
        let pool = deadpool_redis::Config::from_url(redis.url())
            .builder()
            .unwrap()
            .max_size(shape.callers)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .unwrap();
        Conns::Pool(pool)
    } else {
        let mut v = Vec::new();
        for _ in 0..shape.connections {
            v.push(client.get_multiplexed_async_connection().await.unwrap());
        }
        Conns::Multiplexed(v)
    });
    let keys = shape.keys;
    let limit = shape.limit;
    let callers = shape.callers;
    let states: Arc<Vec<std::sync::Mutex<Keys>>> = Arc::new(
        (0..callers)
            .map(|c| std::sync::Mutex::new(Keys::new(c as u64 + 1, keys)))
            .collect(),
    );
    drive(callers, 0.0, o.warmup, o.duration, move |caller| {
        let (function, conns, states) = (function.clone(), conns.clone(), states.clone());
        async move {
            let key = states[caller].lock().unwrap().next();
            let mut fcall = redis::cmd("FCALL");
            fcall
                .arg(&*function)
                .arg(1)
                .arg(format!("tollgate:ring:{{bench-key-{key}}}:GET /bench/:id"))
                .arg(1)
                .arg(0)
                .arg(limit)
                .arg(60_000u64)
                .arg(limit)
                .arg(60_000_000u64);
            let result: redis::RedisResult<Vec<u8>> = match &*conns {
                Conns::Multiplexed(v) => {
                    let mut c = v[caller % v.len()].clone();
                    fcall.query_async(&mut c).await
                }
                Conns::Pool(pool) => {
                    let mut c = pool.get().await.unwrap();
                    fcall.query_async(&mut *c).await
                }
            };
            match result {
                Ok(packed) if admitted(&packed) => Outcome::Allowed,
                Ok(_) => Outcome::Denied,
                Err(_) => Outcome::Error,
            }
        }
    })
    .await
}
