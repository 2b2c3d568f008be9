//! The check's code on the server: the script (`EVALSHA`), and the same code as a function library
//! (`FCALL`) where the server has functions (Redis 7.0 and later, Valkey).
//!
//! `EVALSHA` runs the script's whole top level on every call: ring.lua's helpers are closures
//! made again for each check, a tenth of the script's work (BENCHMARKS.md). A function library's
//! top level runs once, when it is loaded, and `FCALL` calls only the check. The code is the same
//! either way: check.lua becomes the body of the registered function.
//!
//! The library's name and the function's carry the SHA-1 of the library's code, so replicas of two
//! tollgate versions (a rolling upgrade) each call their own, and loading one never replaces the
//! other's.
//! A library is loaded on every new connection (on every primary of a cluster), and again when a
//! call finds it missing (`FUNCTION FLUSH`, a node that joined the cluster since). A server that
//! refuses it (an ACL without `FUNCTION`, a proxy that lacks the command) leaves the checks on
//! `EVALSHA`, with one warning; Redis 6.2 has no functions and uses `EVALSHA` without one.
//!
//! One difference in behaviour: Redis refuses a function that may write (as this one does) whole
//! while it is over `maxmemory` under `noeviction`, where a script failed only at its first write
//! and so still answered the denials of full buckets. Such a Redis fails every check either way
//! for the keys that have room (docs/operations.md says to give it an evicting policy); the
//! over-limit cache keeps answering the buckets it knows are full.

use super::version::{Server, Version};
use std::sync::atomic::{AtomicU8, Ordering};

/// The oldest Redis-compatible version with functions.
const FUNCTIONS: Version = Version {
    major: 7,
    minor: 0,
    patch: 0,
};

/// How checks reach the code: not known before the first connection.
const UNKNOWN: u8 = 0;
const BY_FUNCTION: u8 = 1;
const BY_SCRIPT: u8 = 2;

/// The check script (benches run it too), compiled into the binary and hashed once; `invoke_async`
/// sends `EVALSHA` and falls back to loading the script when Redis answers `NOSCRIPT` (after a
/// restart or `SCRIPT FLUSH`).
pub const SCRIPT: &str = concat!(
    include_str!("ring.lua"),
    include_str!("admit.lua"),
    include_str!("check.lua")
);

/// The check as a function library, as tollgate loads it (benches load it too): the library's
/// source and the function's name.
pub fn check_function() -> (String, String) {
    let code = CheckCode::new();
    (code.library, code.function)
}

/// The check script and its function library.
pub(super) struct CheckCode {
    script: redis::Script,
    library: String,
    function: String,
    /// [`UNKNOWN`], [`BY_FUNCTION`] or [`BY_SCRIPT`], as the last connection made found.
    route: AtomicU8,
}

impl CheckCode {
    /// [`SCRIPT`]'s code both ways.
    pub(super) fn new() -> Self {
        let (ring, admit, check) = (
            include_str!("ring.lua"),
            include_str!("admit.lua"),
            include_str!("check.lua"),
        );
        let code = |function: &str| {
            format!(
                "{ring}{admit}local function check(KEYS, ARGV)\n{check}end\n\
                 redis.register_function('{function}', check)\n"
            )
        };
        // Named by the SHA-1 of all of the library's code (with an empty name in it), so that any
        // change to it, the wrapper's included, is a library of another name.
        let hash = redis::Script::new(&code("")).get_hash().to_owned();
        let function = format!("tollgate_check_{hash}");
        let library = format!("#!lua name=tollgate_{hash}\n{}", code(&function));
        Self {
            script: redis::Script::new(SCRIPT),
            library,
            function,
            route: AtomicU8::new(UNKNOWN),
        }
    }

    /// The script, for `EVALSHA`.
    pub(super) fn script(&self) -> &redis::Script {
        &self.script
    }

    /// The library's source, for `FUNCTION LOAD`.
    pub(super) fn library(&self) -> &str {
        &self.library
    }

    /// Whether checks call the function rather than the script.
    pub(super) fn by_function(&self) -> bool {
        self.route.load(Ordering::Relaxed) == BY_FUNCTION
    }

    /// `FCALL <function> 1 <key>`, for the check's arguments to follow.
    pub(super) fn fcall(&self, key: &str) -> redis::Cmd {
        let mut command = redis::cmd("FCALL");
        command.arg(&self.function).arg(1).arg(key);
        command
    }

    /// Loads the script on a new connection to `server`, and the library where the server has
    /// functions; a library refused leaves the checks on the script. Fails only when the script
    /// cannot be loaded.
    pub(super) async fn load<C>(
        &self,
        connection: &mut C,
        server: &Server,
    ) -> redis::RedisResult<()>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        self.script.load_async(connection).await?;
        let refused = if server.compatible < FUNCTIONS {
            None
        } else {
            load_library(connection, &self.library).await.err()
        };
        let functions = server.compatible >= FUNCTIONS && refused.is_none();
        let route = if functions { BY_FUNCTION } else { BY_SCRIPT };
        // Logged when the route changes, not for every connection.
        if self.route.swap(route, Ordering::Relaxed) != route {
            match refused {
                Some(e) => tracing::warn!(
                    error = %e,
                    %server,
                    "cannot load the check as a redis function: checks run the script (EVALSHA), which costs redis about a tenth more"
                ),
                None if functions => {
                    tracing::info!(function = %self.function, "checks call the redis function");
                }
                None => {
                    tracing::info!(%server, "checks run the script: no redis functions before 7.0")
                }
            }
        }
        Ok(())
    }
}

/// `FUNCTION LOAD REPLACE`: the same name always holds the same code, so replacing it changes
/// nothing, and a cluster's primaries that have it already do not fail the load on the others.
pub(super) async fn load_library<C>(connection: &mut C, library: &str) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Send,
{
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async::<redis::Value>(connection)
        .await
        .map(drop)
}

/// Whether `error` says the called function is not loaded.
pub(super) fn is_missing_function(error: &redis::RedisError) -> bool {
    error.code() == Some("ERR")
        && error
            .detail()
            .is_some_and(|detail| detail.starts_with("Function not found"))
}
