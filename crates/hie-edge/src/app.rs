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

use hie_broker::publish::PublishConfig;
use hie_outbound::feed::{FeedSettings, MllpFeed};
use hie_outbound::publish::{Endpoints, XdsPublisher};
use hie_outbound::registry::XdsClient;

use crate::config::{Config, RegistryKind};

/// A running broker.
#[derive(Debug)]
pub struct App {
    /// Where the listeners are bound (useful when the config asked for port 0).
    pub hl7_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The HTTPS listener's address, when `[https] listen` is set.
    pub https_addr: Option<SocketAddr>,
    /// The DICOM listener's address, when `[dicom] listen` is set.
    pub dicom_addr: Option<SocketAddr>,
    store: Store,
    /// The built-in registry's own database, when it is not `store`.
    registry_store: Option<Store>,
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
        // The HTTPS listener is bound first: the built-in registry's endpoints are our own URLs.
        let https = match &config.https {
            Some(https) => Some(prepare_https(https).await?),
            None => None,
        };
        let https_addr = https.as_ref().map(|https| https.address);
        let registry = config.registry.clone().map(|mut registry| {
            if let (RegistryKind::Builtin, Some(address)) = (registry.kind, https_addr) {
                registry.registry_url = format!("https://{address}/xds/registry");
                registry.repository_url = format!("https://{address}/xds/repository");
            }
            registry
        });
        let deliverers = deliverers(&config, registry.as_ref(), &store)?;
        let worker = OutboxWorker::new(store.clone(), deliverers, policy, config.node_name.clone())
            .with_linger(config.store.outbox_linger);
        let outbox_waker = worker.waker();

        // Without a profile nothing is published, so there is nothing a merge could resend.
        let patient_merge = config.profile.as_ref().map(|profile| profile.patient_merge).unwrap_or_default();
        let adt_config = Arc::new(AdtConfig {
            domain: config.affinity_domain.clone(),
            application: config.hl7.application.clone(),
            facility: config.hl7.facility.clone(),
            answer_never_ack: config.hl7.answer_never_ack,
            max_batch: config.store.group_commit_max_batch,
            patient_merge,
        });
        let (writer, writer_task) = AdtWriter::spawn(store.clone(), Arc::clone(&adt_config), Arc::clone(&outbox_waker));

        let mut tasks = Vec::new();
        let publish_hook = registry.as_ref().map(|_| hie_broker::studies::PublishHook {
            domain: config.affinity_domain.clone(),
            outbox_waker: Arc::clone(&outbox_waker),
            patient_merge,
        });
        // One PACS adapter for manifests and retrievals alike (one pool of associations), and
        // one MoveRouter, which the DIMSE adapter registers its C-MOVEs in and the DICOM
        // listener routes their sub-operations through.
        let move_router = MoveRouter::new();
        let pacs = match &config.pacs {
            Some(settings) => {
                Some(crate::pacs::open_with_router(settings, move_router.clone()).await.context("opening the PACS")?)
            }
            None => None,
        };
        let study_waker =
            start_manifests(&config, &store, pacs.clone(), publish_hook, &shutdown_rx, &mut tasks).await?;
        let registry_store = open_registry_store(&config, registry.as_ref()).await?;
        let builtin = builtin_registry(&config, registry.as_ref(), registry_store.as_ref().unwrap_or(&store))?;
        if let (Some(builtin), Some(registry)) = (&builtin, &registry)
            && let Some(feed) = &registry.feed
        {
            let listener = TcpListener::bind(feed.as_str())
                .await
                .with_context(|| format!("binding the built-in registry's identity feed {feed}"))?;
            let builtin = builtin.clone();
            let shutdown = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move { builtin.serve_feed(listener, shutdown).await }));
        }
        let mut retrieval_stats = None;
        if let Some(https) = https {
            let (router, stats) = https_router(&config, &store, pacs, builtin.as_ref())?;
            retrieval_stats = stats;
            let stats = Arc::new(hie_tls::HttpsStats::new());
            tasks.push(tokio::spawn(https.tls.clone().watch(TLS_RELOAD_POLL, shutdown_rx.clone())));
            tasks.push(tokio::spawn(hie_tls::serve_https(
                https.listener,
                https.tls,
                router,
                stats,
                shutdown_rx.clone(),
                hie_tls::HttpsLimits::default(),
            )));
        }

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
            retrieval_stats,
            outbox_waker: Some(Arc::clone(&outbox_waker)),
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
                router: move_router,
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
        tracing::info!(
            %hl7_addr,
            %api_addr,
            https_addr = ?https_addr,
            dicom_addr = ?dicom_addr,
            version = env!("CARGO_PKG_VERSION"),
            "hie-edge accepting work"
        );
        Ok(App { hl7_addr, api_addr, https_addr, dicom_addr, store, registry_store, shutdown, tasks, writer_task })
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
        if let Some(registry_store) = self.registry_store {
            registry_store.close().await;
        }
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

/// The built-in registry's database (`[registry] builtin_store`), when it is not the broker's.
async fn open_registry_store(
    config: &Config,
    registry: Option<&crate::config::RegistryConfig>,
) -> anyhow::Result<Option<Store>> {
    let Some(url) =
        registry.and_then(|registry| registry.builtin_store.as_deref()).filter(|url| *url != config.store.url)
    else {
        return Ok(None);
    };
    prepare_sqlite_directory(url)?;
    let store = Store::connect(&StoreOptions {
        url: url.to_owned(),
        max_connections: config.store.max_connections,
        acquire_timeout: config.store.acquire_timeout,
    })
    .await
    .context("opening the built-in registry's store")?;
    tracing::info!(engine = ?store.engine(), "built-in registry store ready");
    Ok(Some(store))
}

/// Opens the PACS and starts the study scheduler (and the poller when `[pacs] poll_interval_secs`
/// is set). Returns the scheduler's waker, or `None` when manifests are off: no PACS, or `[node]`
/// lacks the repository unique ID or the UID root a manifest needs.
async fn start_manifests(
    config: &Config,
    store: &Store,
    pacs: Option<Arc<dyn hie_outbound::pacs::Pacs>>,
    publish: Option<hie_broker::studies::PublishHook>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<Arc<tokio::sync::Notify>>> {
    let Some(pacs) = pacs else {
        tracing::info!("no [pacs]: manifests are off");
        return Ok(None);
    };
    let Some(settings) = crate::cli::manifest_settings(config) else {
        tracing::warn!("[pacs] is set but node.repository_unique_id or node.uid_root is not: manifests are off");
        return Ok(None);
    };
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
        publish,
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

/// How often the HTTPS listener's certificate, key, CA bundle and CRL files are checked for
/// changes (they are reloaded without a restart).
const TLS_RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// The bound HTTPS listener and its reloadable TLS configuration.
struct PreparedHttps {
    listener: TcpListener,
    address: SocketAddr,
    tls: hie_tls::ReloadableServerConfig,
}

async fn prepare_https(https: &crate::config::HttpsConfig) -> anyhow::Result<PreparedHttps> {
    if https.dev_pki {
        ensure_dev_pki(&https.tls)?;
    }
    let tls = hie_tls::ReloadableServerConfig::load(https.tls.clone()).context("loading the [https] TLS files")?;
    let listener =
        TcpListener::bind(https.listen).await.with_context(|| format!("binding https.listen {}", https.listen))?;
    let address = listener.local_addr()?;
    Ok(PreparedHttps { listener, address, tls })
}

/// `[https] dev_pki`: a development PKI (`hie-edge pki init`) in the certificate's folder, when none
/// of the configured files exist yet. Files half there are left alone (and then fail to load,
/// saying which).
fn ensure_dev_pki(tls: &hie_tls::ServerTlsSettings) -> anyhow::Result<()> {
    let files = [&tls.certificate_chain, &tls.private_key, &tls.client_ca_bundle];
    if files.iter().any(|path| path.exists()) {
        return Ok(());
    }
    let folder = tls
        .certificate_chain
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let written = hie_tls::pki::init(folder, hie_tls::pki::Overwrite::Refuse)
        .with_context(|| format!("creating the development PKI in {}", folder.display()))?;
    tracing::warn!(
        folder = %folder.display(),
        "created a development PKI (TEST ONLY: not for production; see hie-edge pki init)"
    );
    drop(written);
    Ok(())
}

/// What the HTTPS listener serves: the built-in registry and repository when configured, and the
/// retrieval endpoint (`/xdsi/imaging-source`, RAD-69 and ITI-43) when `[node]
/// repository_unique_id` names us, with its counters for `/metrics`.
fn https_router(
    config: &Config,
    store: &Store,
    pacs: Option<Arc<dyn hie_outbound::pacs::Pacs>>,
    builtin: Option<&hie_refregistry::RefRegistry>,
) -> anyhow::Result<(axum::Router, Option<Arc<hie_inbound::xdsi::XdsiStats>>)> {
    let mut router = axum::Router::new();
    if let Some(builtin) = builtin {
        router = router.merge(builtin.router());
    }
    let Some(repository_unique_id) = &config.node.repository_unique_id else {
        tracing::warn!("node.repository_unique_id is not set: /xdsi/imaging-source (RAD-69, ITI-43) is off");
        return Ok((router, None));
    };
    let partners = Arc::new(partner_directory(&config.partners)?);
    let mut settings = hie_inbound::xdsi::XdsiSettings::new(repository_unique_id.as_str());
    settings.home_community_id = config.profile.as_ref().and_then(|profile| profile.home_community_id.clone());
    let state = hie_inbound::xdsi::XdsiState::new(settings, store.clone(), pacs, partners);
    let stats = state.stats();
    router = router.merge(hie_inbound::xdsi::router(state));
    Ok((router, Some(stats)))
}

/// `[[partners]]` as the TLS layer's directory: pinned certificates are read here, once.
fn partner_directory(partners: &[crate::config::PartnerConfig]) -> anyhow::Result<hie_tls::PartnerDirectory> {
    let mut entries = Vec::with_capacity(partners.len());
    for partner in partners {
        let identity = match &partner.identity {
            crate::config::PartnerIdentityConfig::Certificate(path) => {
                let chain = hie_tls::load::certificate_chain(path)
                    .with_context(|| format!("partner {}: reading its certificate", partner.name))?;
                let Some(certificate) = chain.into_iter().next() else {
                    anyhow::bail!("partner {}: {} holds no certificate", partner.name, path.display());
                };
                hie_tls::PartnerIdentity::Pinned { certificate }
            }
            crate::config::PartnerIdentityConfig::Subject(subject) => {
                hie_tls::PartnerIdentity::Subject { subject: subject.clone() }
            }
        };
        entries.push(hie_tls::Partner {
            name: partner.name.clone(),
            identity,
            transactions: partner.transactions.clone(),
        });
    }
    hie_tls::PartnerDirectory::new(entries).context("[[partners]]")
}

/// `[registry] kind = "builtin"`: the reference registry and repository, on `store` (its own,
/// or the broker's: `[registry] builtin_store`).
fn builtin_registry(
    config: &Config,
    registry: Option<&crate::config::RegistryConfig>,
    store: &Store,
) -> anyhow::Result<Option<hie_refregistry::RefRegistry>> {
    let Some(registry) = registry.filter(|registry| registry.kind == RegistryKind::Builtin) else {
        return Ok(None);
    };
    // In register mode the broker is the repository; the built-in one stores nothing then.
    let repository_unique_id = registry
        .builtin_repository_unique_id
        .clone()
        .or_else(|| config.node.repository_unique_id.clone())
        .context("the built-in repository needs registry.builtin_repository_unique_id")?;
    let mut builtin_config = hie_refregistry::RefRegistryConfig::new(
        repository_unique_id,
        config.affinity_domain.patient_id_authority().clone(),
    );
    builtin_config.home_community_id = config
        .profile
        .as_ref()
        .and_then(|profile| profile.home_community_id.as_deref())
        .and_then(|home| home.strip_prefix("urn:oid:"))
        .and_then(|oid| hie_core::Oid::parse(oid).ok());
    builtin_config.feed.application = registry.feed_receiving_application.clone();
    builtin_config.feed.facility = registry.feed_receiving_facility.clone();
    builtin_config.feed.max_frame_bytes = config.hl7.max_frame_bytes;
    let builtin = hie_refregistry::RefRegistry::new(store.clone(), builtin_config).context("the built-in registry")?;
    tracing::info!(registry = %registry.registry_url, repository = %registry.repository_url, "built-in registry on");
    Ok(Some(builtin))
}

/// One deliverer per outbox topic: the identity feed and, when publishing, registry submissions.
fn deliverers(
    config: &Config,
    registry: Option<&crate::config::RegistryConfig>,
    store: &Store,
) -> anyhow::Result<Vec<Arc<dyn Deliver>>> {
    let mut deliverers: Vec<Arc<dyn Deliver>> = Vec::new();
    let feed = registry.and_then(|registry| registry.feed.clone().map(|address| (registry, address)));
    match feed {
        Some((registry, address)) => deliverers.push(Arc::new(MllpFeed::new(
            store.clone(),
            config.affinity_domain.clone(),
            FeedSettings {
                address,
                parties: hie_broker::feed::FeedParties {
                    sending_application: config.hl7.application.clone(),
                    sending_facility: config.hl7.facility.clone(),
                    receiving_application: registry.feed_receiving_application.clone(),
                    receiving_facility: registry.feed_receiving_facility.clone(),
                },
                connect_timeout: registry.timeout.min(std::time::Duration::from_secs(10)),
                ack_timeout: registry.timeout,
            },
        ))),
        // No feed configured: identity changes are acknowledged locally so they do not hold up
        // the patients' other items.
        None => deliverers.push(Arc::new(LogDeliverer::new(hie_broker::patients::IDENTITY_FEED_TOPIC))),
    }
    if let Some(registry) = registry {
        let (Some(profile), Some(repository_unique_id)) = (&config.profile, &config.node.repository_unique_id) else {
            anyhow::bail!("publishing needs affinity_domain.profile and node.repository_unique_id");
        };
        let tls = match &registry.client_tls {
            Some(settings) => {
                Some(hie_tls::client_config(settings).context("loading the [registry] client TLS files")?)
            }
            None => None,
        };
        let publish = PublishConfig {
            mode: registry.mode,
            profile: Arc::clone(profile),
            domain: config.affinity_domain.clone(),
            repository_unique_id: repository_unique_id.as_str().to_owned(),
        };
        let endpoints =
            Endpoints { registry_url: registry.registry_url.clone(), repository_url: registry.repository_url.clone() };
        deliverers.push(Arc::new(XdsPublisher::new(
            store.clone(),
            Arc::new(publish),
            endpoints,
            XdsClient::new(tls, registry.timeout),
            config.store.outbox_max_attempts,
        )));
    }
    Ok(deliverers)
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
