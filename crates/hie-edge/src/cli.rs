//! The command line. Exit codes: 0 success, 1 runtime failure, 64 bad configuration or usage
//! (BSD `EX_USAGE`), so scripts can tell a typo from an outage.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config;

pub(crate) const EXIT_RUNTIME: u8 = 1;
pub(crate) const EXIT_CONFIG: u8 = 64;

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
    /// XDS-I.b manifests (DICOM Key Object Selection documents).
    Kos {
        #[command(subcommand)]
        command: KosCommand,
    },
    /// Studies the broker manifests.
    Study {
        #[command(subcommand)]
        command: StudyCommand,
    },
    /// Queue a study for publishing now: its manifest is (re)built from the PACS and the current
    /// version sent to the registry unless it is registered already. The broker (serve) does the work.
    Publish {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Study Instance UID.
        #[arg(long, value_name = "UID")]
        study: String,
    },
    /// Publish the PACS's studies dated on or after DATE (YYYYMMDD or YYYY-MM-DD) and follow them
    /// with a progress bar until each is published or failed. The broker (serve) does the work.
    Backfill {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "DATE")]
        since: String,
        /// Stop following after this many seconds without progress.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        stall_timeout: u64,
    },
    /// HL7 v2 tools for integration engineers.
    Hl7 {
        #[command(subcommand)]
        command: Hl7Command,
    },
    /// Certificates for mutual TLS.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Debug, Subcommand)]
enum Hl7Command {
    /// Send HL7 v2 messages (one per file) over MLLP and print each ACK's code; exits 1 unless
    /// every message is accepted (AA or CA).
    Send {
        /// Where the MLLP listener is, host:port.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2575")]
        to: String,
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Write a development PKI (TEST ONLY): ca.pem, ca.key, server.pem, server.key (valid for
    /// 127.0.0.1 and localhost), client.pem, client.key.
    Init {
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files (otherwise an existing file is an error and nothing is written).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StudyCommand {
    /// Ask the broker (through its database) to build the study's manifest now, as if it had just
    /// changed: a new version is made if the PACS holds something different.
    Refresh {
        /// The TOML configuration; HIE_EDGE__<SECTION>__<KEY> variables override its keys.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Study Instance UID.
        #[arg(long, value_name = "UID")]
        study: String,
    },
}

#[derive(Debug, Subcommand)]
enum KosCommand {
    /// Write the manifest the broker would publish for one study, from the configured PACS.
    Build {
        /// The TOML configuration; HIE_EDGE__<SECTION>__<KEY> variables override its keys.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Study Instance UID.
        #[arg(long, value_name = "UID")]
        study: String,
        /// Where to write the manifest (DICOM Part 10).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Runs the command line given as `args` (including the program name).
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    // One crypto provider for every TLS use, before any config is built (crates-and-performance 4).
    hie_tls::install_default_provider();
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
        Command::Kos { command: KosCommand::Build { config, study, out } } => kos_build(&config, &study, &out),
        Command::Study { command: StudyCommand::Refresh { config, study } } => study_refresh(&config, &study),
        Command::Pki { command: PkiCommand::Init { out, force } } => pki_init(&out, force),
        Command::Hl7 { command: Hl7Command::Send { to, files } } => hl7_send(&to, &files),
        Command::Publish { config, study } => publish_study(&config, &study),
        Command::Backfill { config, since, stall_timeout } => {
            crate::backfill::run(&config, &since, std::time::Duration::from_secs(stall_timeout))
        }
    }
}

pub(crate) fn load_or_report(path: &Path) -> Result<config::Config, ExitCode> {
    config::load(path, std::env::vars()).map_err(|problems| {
        for problem in &problems {
            eprintln!("{}: {problem}", path.display());
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `kos build`: configuration problems (including a setting this command needs but the file
/// leaves empty) exit 64; an unknown study, an unreachable PACS or an unwritable output exit 1.
fn kos_build(path: &Path, study: &str, out: &Path) -> ExitCode {
    let config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (Some(settings), Some(pacs)) = (manifest_settings(&config), &config.pacs) else {
        for (missing, key) in [
            (config.node.repository_unique_id.is_none(), "node.repository_unique_id"),
            (config.node.uid_root.is_none(), "node.uid_root"),
            (config.pacs.is_none(), "pacs.path"),
        ] {
            if missing {
                eprintln!("{}: {key}: must be set for kos build", path.display());
            }
        }
        return ExitCode::from(EXIT_CONFIG);
    };
    let mut uids = match hie_kos::RootedUids::new(&settings.uid_root) {
        Ok(uids) => uids,
        Err(error) => {
            eprintln!("{}: node.uid_root: {error}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let evidence = runtime.block_on(async {
        let pacs = crate::pacs::open(pacs).await?;
        pacs.study_evidence(study).await
    });
    let evidence = match evidence {
        Ok(evidence) => evidence,
        Err(error) => {
            eprintln!("kos build: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let bytes = match hie_broker::studies::build_manifest(&evidence, &settings, 1, &mut uids) {
        Ok((bytes, _, _)) => bytes,
        Err(error) => {
            eprintln!("kos build: study {study}: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if let Err(error) = std::fs::write(out, &bytes) {
        eprintln!("kos build: cannot write {}: {error}", out.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    println!(
        "study {study}: {} series, {} instances -> {}",
        evidence.series.len(),
        evidence.n_instances(),
        out.display()
    );
    ExitCode::SUCCESS
}

/// `publish`: like `study refresh`, for a broker with `[registry]`; refuses when publishing is off.
fn publish_study(path: &Path, study: &str) -> ExitCode {
    match load_or_report(path) {
        Ok(config) if config.registry.is_none() => {
            eprintln!("{}: registry.kind: publishing is off; set [registry]", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(_) => study_refresh(path, study),
        Err(code) => code,
    }
}

/// `study refresh`: records an explicit request in the store the broker runs on.
pub(crate) fn study_refresh(path: &Path, study: &str) -> ExitCode {
    let config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if !hie_kos::is_valid_uid(study) {
        eprintln!("study refresh: {study:?} is not a Study Instance UID");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = crate::app::open_store(&config).await?;
        hie_broker::studies::request(&store, study).await?;
        store.close().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => {
            println!("study {study}: queued; the broker builds its manifest now");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("study refresh: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `hl7 send`: one connection, each file's message in turn, each answered before the next.
fn hl7_send(to: &str, files: &[PathBuf]) -> ExitCode {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(30);
    let mut stream = match std::net::TcpStream::connect(to) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("hl7 send: cannot connect to {to}: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut all_accepted = true;
    for file in files {
        let message = match std::fs::read(file) {
            Ok(message) => message,
            Err(error) => {
                eprintln!("hl7 send: {}: {error}", file.display());
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let mut frame = Vec::new();
        hie_hl7::mllp::encode(&message, &mut frame);
        if let Err(error) = stream.write_all(&frame) {
            eprintln!("hl7 send: {}: sending: {error}", file.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
        let mut decoder = hie_hl7::mllp::MllpDecoder::new(1 << 20);
        let mut buffer = bytes::BytesMut::new();
        let ack = loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(payload)) => break payload,
                Ok(None) => {}
                Err(error) => {
                    eprintln!("hl7 send: {}: answer: {error}", file.display());
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
            let mut chunk = [0_u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    eprintln!("hl7 send: {}: the connection closed before an ACK", file.display());
                    return ExitCode::from(EXIT_RUNTIME);
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(error) => {
                    eprintln!("hl7 send: {}: waiting for the ACK: {error}", file.display());
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
        };
        let text = String::from_utf8_lossy(&ack);
        let msa: Vec<&str> =
            text.split(['\r', '\n']).find(|segment| segment.starts_with("MSA")).unwrap_or("MSA").split('|').collect();
        let code = msa.get(1).copied().unwrap_or("?");
        println!("{}: {code} {}", file.display(), msa.get(3).copied().unwrap_or_default());
        all_accepted &= matches!(code, "AA" | "CA");
    }
    if all_accepted { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME) }
}

/// `pki init`: exit 1 when a file exists (without `--force`) or can't be written.
fn pki_init(out: &Path, force: bool) -> ExitCode {
    if let Err(error) = std::fs::create_dir_all(out) {
        eprintln!("pki init: cannot create {}: {error}", out.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    let overwrite = if force { hie_tls::pki::Overwrite::Replace } else { hie_tls::pki::Overwrite::Refuse };
    match hie_tls::pki::init(out, overwrite) {
        Ok(files) => {
            println!("development PKI (TEST ONLY) written to {}:", out.display());
            for path in [
                &files.ca_certificate,
                &files.ca_key,
                &files.server_certificate,
                &files.server_key,
                &files.client_certificate,
                &files.client_key,
            ] {
                println!("  {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pki init: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// How manifests describe themselves, when `[node]` says enough to build one.
pub(crate) fn manifest_settings(config: &config::Config) -> Option<hie_broker::studies::ManifestSettings> {
    Some(hie_broker::studies::ManifestSettings {
        retrieve_ae_title: config.dicom.ae_title.clone(),
        repository_unique_id: config.node.repository_unique_id.as_ref()?.as_str().to_owned(),
        uid_root: config.node.uid_root.as_ref()?.as_str().to_owned(),
        institution_name: None,
    })
}

fn check_config(path: &Path) -> ExitCode {
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

fn serve(path: &Path) -> ExitCode {
    let config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
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
        // Installed before start: a SIGTERM right after "accepting work" must not find the
        // default action (termination without a clean shutdown).
        let signals = ShutdownSignals::install();
        let app = match App::start(config).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "hie-edge failed to start");
                return (ExitCode::from(EXIT_RUNTIME), Some(telemetry));
            }
        };
        signals.wait().await;
        tracing::info!("shutting down");
        app.shutdown().await;
        (ExitCode::SUCCESS, Some(telemetry))
    });
    // Flushing spans waits on a task of the runtime, so it must not block a runtime thread.
    if let Some(telemetry) = telemetry {
        let flush = runtime.spawn_blocking(move || drop(telemetry));
        let _ = runtime.block_on(flush);
    }
    exit_code
}

/// SIGTERM and SIGINT, registered when made (so none is lost between start-up and the wait).
struct ShutdownSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignals {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn wait(mut self) {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(self.terminate.as_mut()) => {}
            () = next(self.interrupt.as_mut()) => {}
        }
    }
}

/// The single-threaded runtime a one-shot subcommand runs its store or PACS work on.
pub(crate) fn one_shot_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
        eprintln!("cannot start the runtime: {error}");
        ExitCode::from(EXIT_RUNTIME)
    })
}
