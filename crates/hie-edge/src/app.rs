//! Wiring: `App::start` opens the store, starts the ADT writer and the outbox worker, binds the
//! listeners (HL7, HTTP, and DICOM when `[dicom] listen` is set), and only then reports itself
//! healthy. One `MoveRouter` is made here and shared by the DIMSE PACS adapter (which registers
//! its C-MOVEs) and the DICOM listener (which routes their sub-operations). `App::shutdown` stops accepting, lets
//! in-flight work finish, and closes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use hie_broker::adt::AdtConfig;
use hie_broker::commit::AdtWriter;
use hie_broker::studies::{StudyConfig, StudyScheduler};
use hie_dicom_net::MoveRouter;
use hie_inbound::api::{self, ApiState};
use hie_inbound::dicom::{DicomStats, ListenerConfig, ListenerContext};
use hie_inbound::mllp::{self, MllpConfig, MllpStats};
use hie_outbound::{Deliver, LogDeliverer, OutboxWorker};
use hie_store::outbox::OutboxPolicy;
use hie_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// A running broker.
#[derive(Debug)]
pub struct App {
    /// Where the listeners are bound (useful when the config asked for port 0).
    pub hl7_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The DICOM listener's address, when `[dicom] listen` is set.
    pub dicom_addr: Option<SocketAddr>,
    store: Store,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    writer_task: JoinHandle<()>,
}

impl App {
    pub async fn start(config: Config) -> anyhow::Result<App> {
        let store = open_store(&config).await?;
        tracing::info!(engine = ?store.engine(), "store ready");

        let (shutdown, shutdown_rx) = watch::channel(false);
        let policy = OutboxPolicy {
            lease: config.store.outbox_lease,
            backoff_base: config.store.outbox_backoff_base,
            backoff_max: config.store.outbox_backoff_max,
            max_attempts: config.store.outbox_max_attempts,
        };
        // Identity feeds are queued from this release on; the ITI-8 sender arrives with the
        // registry configuration, until then they are acknowledged locally.
        let deliverers: Vec<Arc<dyn Deliver>> =
            vec![Arc::new(LogDeliverer::new(hie_broker::patients::IDENTITY_FEED_TOPIC))];
        let worker = OutboxWorker::new(store.clone(), deliverers, policy, config.node_name.clone());
        let outbox_waker = worker.waker();

        let adt_config = Arc::new(AdtConfig {
            domain: config.affinity_domain.clone(),
            application: config.hl7.application.clone(),
            facility: config.hl7.facility.clone(),
            answer_never_ack: config.hl7.answer_never_ack,
            max_batch: config.store.group_commit_max_batch,
        });
        let (writer, writer_task) = AdtWriter::spawn(store.clone(), Arc::clone(&adt_config), outbox_waker);

        let mut tasks = Vec::new();
        let router = MoveRouter::new();
        let study_waker = start_manifests(&config, &store, &router, &shutdown_rx, &mut tasks).await?;

        let hl7_listener = TcpListener::bind(config.hl7.listen)
            .await
            .with_context(|| format!("binding hl7.listen {}", config.hl7.listen))?;
        let api_listener = TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("binding api.listen {}", config.api_listen))?;
        let hl7_addr = hl7_listener.local_addr()?;
        let api_addr = api_listener.local_addr()?;
        let dicom_listener = match config.dicom.listen {
            Some(listen) => {
                Some(TcpListener::bind(listen).await.with_context(|| format!("binding dicom.listen {listen}"))?)
            }
            None => None,
        };
        let dicom_addr = dicom_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let dicom_stats = Arc::new(DicomStats::default());

        let mllp_stats = Arc::new(MllpStats::default());
        let accepting = Arc::new(AtomicBool::new(false));
        let api_state = ApiState {
            store: store.clone(),
            domain: config.affinity_domain.clone(),
            adt_stats: writer.stats_handle(),
            mllp_stats: Arc::clone(&mllp_stats),
            dicom_stats: Arc::clone(&dicom_stats),
            accepting: Arc::clone(&accepting),
            version: env!("CARGO_PKG_VERSION"),
            study_waker: study_waker.clone(),
        };
        let mllp_config = MllpConfig {
            max_frame_bytes: config.hl7.max_frame_bytes,
            idle_timeout: config.hl7.idle_timeout,
            max_connections: config.hl7.max_connections,
        };
        tasks.push(tokio::spawn(worker.run(shutdown_rx.clone())));
        tasks.push(tokio::spawn(mllp::serve(
            hl7_listener,
            mllp_config,
            adt_config,
            writer,
            mllp_stats,
            shutdown_rx.clone(),
        )));
        if let Some(listener) = dicom_listener {
            let context = ListenerContext {
                store: store.clone(),
                router,
                // Without manifests nobody waits on arrivals; the headers are kept all the same.
                scheduler: study_waker.unwrap_or_default(),
                stats: dicom_stats,
            };
            tasks.push(tokio::spawn(hie_inbound::dicom::serve(
                listener,
                listener_config(&config),
                context,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(housekeeping(store.clone(), config.store.retention, shutdown_rx.clone())));
        let mut api_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(api_listener, api::router(api_state)).with_graceful_shutdown(async move {
                let _ = api_shutdown.changed().await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "API listener failed");
            }
        }));
        accepting.store(true, Ordering::Release);
        tracing::info!(%hl7_addr, %api_addr, dicom_addr = ?dicom_addr, version = env!("CARGO_PKG_VERSION"), "hie-edge accepting work");
        Ok(App { hl7_addr, api_addr, dicom_addr, store, shutdown, tasks, writer_task })
    }

    /// Stops listeners and workers, waits for them, then closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // The writer ends once every connection (and so every sender handle) is gone.
        let _ = self.writer_task.await;
        self.store.close().await;
    }
}

/// Opens (and migrates) the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    prepare_sqlite_directory(&config.store.url)?;
    Store::connect(&StoreOptions {
        url: config.store.url.clone(),
        max_connections: config.store.max_connections,
        acquire_timeout: config.store.acquire_timeout,
    })
    .await
    .context("opening the store")
}

/// Opens the PACS and starts the study scheduler (and the poller when `[pacs] poll_interval_secs`
/// is set). Returns the scheduler's waker, or `None` when manifests are off: no PACS, or `[node]`
/// lacks the repository unique ID or the UID root a manifest needs.
async fn start_manifests(
    config: &Config,
    store: &Store,
    router: &MoveRouter,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<Arc<tokio::sync::Notify>>> {
    let Some(pacs_settings) = &config.pacs else {
        tracing::info!("no [pacs]: manifests are off");
        return Ok(None);
    };
    let Some(settings) = crate::cli::manifest_settings(config) else {
        tracing::warn!("[pacs] is set but node.repository_unique_id or node.uid_root is not: manifests are off");
        return Ok(None);
    };
    let pacs = crate::pacs::open(pacs_settings, router.clone()).await.context("opening the PACS")?;
    let study_config = StudyConfig {
        quiet_period: config.dicom.quiet_period,
        evidence: config.dicom.evidence,
        retry: OutboxPolicy {
            lease: config.store.outbox_lease,
            backoff_base: config.store.outbox_backoff_base,
            backoff_max: config.store.outbox_backoff_max,
            max_attempts: config.store.outbox_max_attempts,
        },
        concurrency: 4,
        owner: config.node_name.clone(),
    };
    let scheduler = StudyScheduler::new(store.clone(), Arc::clone(&pacs), study_config, settings)
        .context("starting the study scheduler")?;
    let waker = scheduler.waker();
    tracing::info!(pacs = %pacs.describe(), "manifests on");
    tasks.push(tokio::spawn(scheduler.run(shutdown.clone())));
    if let Some(interval) = config.poll.interval {
        tasks.push(tokio::spawn(hie_broker::studies::run_poller(
            store.clone(),
            pacs,
            interval,
            config.poll.lookback_days,
            config.dicom.quiet_period,
            Arc::clone(&waker),
            shutdown.clone(),
        )));
    }
    Ok(Some(waker))
}

/// The DICOM listener's settings from `[dicom]`.
fn listener_config(config: &Config) -> ListenerConfig {
    ListenerConfig {
        ae_title: config.dicom.ae_title.clone(),
        allowed_calling_ae_titles: config.dicom.allowed_calling_ae_titles.clone(),
        max_associations: config.dicom.max_associations,
        association_timeout: config.dicom.association_timeout,
        idle_timeout: config.dicom.idle_timeout,
        quiet_period: config.dicom.quiet_period,
        max_header_bytes: hie_dicom_net::header::DEFAULT_MAX_HEADER_BYTES,
    }
}

/// Keeps the store bounded: recorded HL7 message IDs and delivered outbox items older than the
/// retention window are deleted, hourly. Failed outbox items are kept until handled.
async fn housekeeping(store: Store, retention: std::time::Duration, mut shutdown: watch::Receiver<bool>) {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);
    let retention_micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    loop {
        let cutoff = hie_store::now_micros().saturating_sub(retention_micros);
        match store.purge_recorded_acks(cutoff).await {
            Ok(n_deleted) => tracing::debug!(n_deleted, "purged recorded HL7 messages"),
            Err(error) => tracing::warn!(%error, "housekeeping: purging recorded HL7 messages failed"),
        }
        match store.outbox_purge_done(cutoff).await {
            Ok(n_deleted) => tracing::debug!(n_deleted, "purged delivered outbox items"),
            Err(error) => tracing::warn!(%error, "housekeeping: purging the outbox failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// SQLite creates the database file but not its folder; the quickstart keeps it under `var/`.
fn prepare_sqlite_directory(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}
