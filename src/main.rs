use clap::Parser;
use std::process::ExitCode;
use tollgate::cli::{self, Args, Command};
use tollgate::config::Config;
use tollgate::{server, shutdown};

/// mimalloc: the check path allocates many small, short-lived buffers (HTTP/2 frames, protobuf
/// messages); glibc malloc took about 17 % of tollgate's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::CheckConfig { file }) = &args.command {
        return match Config::load(Some(file), &args.overrides()) {
            Ok(config) => {
                println!("{}: OK\n{config}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    cli::init_tracing(args.log_format);
    let config = match Config::load(args.config.as_deref(), &args.overrides()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %config.listen,
        store = %config.store_description(),
        routes = config.routes.routes().len(),
        path_prefix = %config.path_prefix,
        api_key_header = %config.api_key_header,
        failure_mode = ?config.failure_mode,
        drain_period = ?config.drain_period,
        "tollgate starting"
    );
    match server::run(config, listener, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tollgate failed");
            ExitCode::FAILURE
        }
    }
}
