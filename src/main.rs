use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tollgate::cli::{self, Args, Command};
use tollgate::config::Config;
use tollgate::server::{self, shutdown};

/// mimalloc: the check path allocates many small, short-lived buffers (HTTP/2 frames, protobuf
/// messages); glibc malloc took about 17 % of tollgate's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long, once the server has stopped, the exit waits for blocking tasks (a DNS lookup of a
/// Redis reconnect, say) that dropping the runtime would otherwise wait for without a limit.
const BLOCKING_TASKS_AT_EXIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    match runtime() {
        Ok(runtime) => {
            let code = runtime.block_on(run(Args::parse()));
            runtime.shutdown_timeout(BLOCKING_TASKS_AT_EXIT);
            code
        }
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// tokio's multi-threaded runtime, one worker per core, with the LIFO slot off. With it on, a
/// check that finishes wakes its HTTP/2 connection task into the slot, so the connection writes
/// each answer on its own `writev` (0.8 per check measured); with it off the connection runs after
/// the other ready checks and writes their answers together, which cut tollgate's CPU per check
/// by a quarter to a third under load (BENCHMARKS.md). The setting is in tokio's unstable API,
/// enabled by `.cargo/config.toml`; a build without that cfg keeps the slot and says so at start.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

async fn run(args: Args) -> ExitCode {
    match &args.command {
        Some(Command::CheckConfig { file }) => check_config(file, &args),
        Some(Command::Admin(admin)) => cli::admin::run(admin).await,
        None => serve(&args).await,
    }
}

/// `tollgate check-config FILE`: the file validated and printed as tollgate reads it.
fn check_config(file: &std::path::Path, args: &Args) -> ExitCode {
    match Config::load(Some(file), &args.overrides()) {
        Ok(config) => {
            println!("{}: OK\n{config}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// tollgate itself: the configuration read, every listener bound, then served until SIGTERM.
async fn serve(args: &Args) -> ExitCode {
    // SIGHUP asks for a reload; until the watcher listens for it (and always without a
    // configuration file) its default action would kill the process with no drain. Listening once
    // replaces that action for the process's lifetime.
    #[cfg(unix)]
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    cli::init_tracing(args.log_format);
    #[cfg(not(tokio_unstable))]
    tracing::warn!(
        "built without --cfg tokio_unstable (RUSTFLAGS replaces .cargo/config.toml): the runtime keeps its LIFO slot, which costs throughput under load"
    );
    let config = match Config::load(args.config.as_deref(), &args.overrides()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let listeners = match server::Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin.listen,
        metrics_listen = ?config.metrics_listen,
        store = %config.store_description(),
        routes = config.routes.routes().len(),
        path_prefix = %config.path_prefix,
        api_key_header = %config.api_key_header,
        failure_mode = ?config.failure_mode,
        drain_period = ?config.drain_period,
        shutdown_grace = ?config.shutdown_grace,
        "tollgate starting"
    );
    match server::run(config, listeners, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tollgate failed");
            ExitCode::FAILURE
        }
    }
}
