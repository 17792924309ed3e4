//! The command line. Exit codes: 0 success, 1 runtime failure, 64 bad configuration or usage
//! (BSD `EX_USAGE`), so scripts can tell a typo from an outage.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "hie-edge", version, about = "Edge broker between a hospital's imaging and an XDS-I.b HIE")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: HL7 (MLLP) and HTTP listeners, the store and the outbox workers.
    Serve {
        /// The TOML configuration; HIE_EDGE__<SECTION>__<KEY> variables override its keys.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration (with the environment overrides) and print every problem.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs the command line given as `args` (including the program name).
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path, std::env::vars()) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                println!("{}: {problem}", path.display());
            }
            eprintln!("{} problem(s) in {}", problems.len(), path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path, std::env::vars()) {
        Ok(config) => config,
        Err(problems) => {
            for problem in &problems {
                eprintln!("{}: {problem}", path.display());
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let (exit_code, telemetry) = runtime.block_on(async move {
        let telemetry = match hie_telemetry::init(&config.telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("telemetry: {error}");
                return (ExitCode::from(EXIT_CONFIG), None);
            }
        };
        let app = match App::start(config).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "hie-edge failed to start");
                return (ExitCode::from(EXIT_RUNTIME), Some(telemetry));
            }
        };
        shutdown_signal().await;
        tracing::info!("shutting down");
        app.shutdown().await;
        (ExitCode::SUCCESS, Some(telemetry))
    });
    // Flushing spans waits on a task of the runtime, so it must not block a runtime thread.
    if let Some(telemetry) = telemetry {
        let _ = runtime.block_on(tokio::task::spawn_blocking(move || drop(telemetry)));
    }
    exit_code
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
