//! One round trip to Redis, the same for a standalone server and a cluster: a script call or a
//! plain command, bounded by the store's timeout.

use super::StoreError;
use super::function::{is_missing_function, load_library};
use std::time::Duration;

/// One round trip to Redis.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    /// A script call: `EVALSHA`, and the script loaded on `NOSCRIPT`.
    Script(&'a redis::ScriptInvocation<'a>),
    /// A function call: `FCALL`, and `library` loaded when the function is missing.
    Function {
        call: &'a redis::Cmd,
        library: &'a str,
    },
    /// A plain command.
    Command(&'a redis::Cmd),
}

impl Request<'_> {
    /// Sends the request on `connection`.
    pub(super) async fn send<T, C>(self, connection: &mut C) -> redis::RedisResult<T>
    where
        T: redis::FromRedisValue,
        C: redis::aio::ConnectionLike + Send,
    {
        match self {
            Self::Script(invocation) => invocation.invoke_async(connection).await,
            Self::Function { call, library } => match call.query_async(connection).await {
                Err(e) if is_missing_function(&e) => {
                    load_library(connection, library).await?;
                    call.query_async(connection).await
                }
                result => result,
            },
            Self::Command(command) => command.query_async(connection).await,
        }
    }
}

/// `call`'s reply, or a timeout error once `timeout` has passed.
pub(super) async fn within_timeout<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    Ok(tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| StoreError::Timeout(timeout))??)
}
