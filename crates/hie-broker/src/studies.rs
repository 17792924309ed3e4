//! Knowing when a study is ready, and turning it into a manifest.
//!
//! Three triggers end in the same place, a change recorded by `hie_store::studies::note_change`:
//! C-STORE arrivals at our listener ([`note_arrival`]), a poll of the PACS ([`poll_once`]), and an
//! explicit request ([`request`], from the CLI or the REST API). A change makes the study due
//! after the quiet period; each further change pushes that back, so a study is manifested once
//! it has been stable for the quiet period.
//!
//! The [`StudyScheduler`] claims due studies (leased, so several broker instances share the
//! work), gathers the evidence (from the PACS, or from the headers our listener received), and
//! compares its fingerprint with the latest manifest's: only a change in what the manifest says
//! makes a new version (later arrivals, deletions, corrected patient data), or, under the
//! profile's `PatientMergePolicy::Republish`, a registered version that went under another
//! patient than the one the study is published under now (a merge: the version under the
//! survivor needs a uniqueId of its own, so a new version). A study the PACS no
//! longer holds after it was manifested becomes `gone` (the publishing pipeline deprecates it).
//! Failures are retried with backoff, then parked as `failed` until requested again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hie_core::profile::PatientMergePolicy;
use hie_kos::{KosOptions, RootedUids, StudyEvidence, StudyEvidenceBuilder, UidSource};
use hie_store::outbox::OutboxPolicy;
use hie_store::studies::{self, ChangeSource, ClaimedStudy, Finish, NewManifest, ReferencedInstance, StudyChange};
use hie_store::{Store, StoreError, now_micros};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use crate::ports::{Pacs, PacsError, StudySummary};
use crate::publish;

/// Where a manifest's evidence comes from (`[dicom] evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceSource {
    /// Ask the PACS what it holds (C-FIND, QIDO-RS, or the folder): the manifest references what
    /// retrieval can serve.
    Pacs,
    /// The instance headers our DICOM listener received: for a PACS that routes studies to the
    /// broker but does not answer instance-level queries.
    Received,
}

/// How manifests describe themselves.
#[derive(Debug, Clone)]
pub struct ManifestSettings {
    /// Retrieve AE Title of every referenced series: our AE, as retrieval goes through us.
    pub retrieve_ae_title: String,
    /// Retrieve Location UID: our repositoryUniqueId.
    pub repository_unique_id: String,
    /// Root of the UIDs manifests get.
    pub uid_root: String,
    pub institution_name: Option<String>,
}

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    /// How long a study must be quiet before it is manifested.
    pub quiet_period: Duration,
    pub evidence: EvidenceSource,
    /// Backoff between failed builds and the attempts before a study is parked as failed.
    pub retry: OutboxPolicy,
    /// Studies built at once.
    pub concurrency: usize,
    /// Who we are in leases (the node name).
    pub owner: String,
    /// When publishing is on: every new version is queued for the registry, and a study gone
    /// from the PACS queued for deprecation, in the transaction that records it.
    pub publish: Option<PublishHook>,
}

/// What the scheduler needs to queue submissions.
#[derive(Debug, Clone)]
pub struct PublishHook {
    pub domain: hie_core::AffinityDomain,
    /// Woken after a commit that queued a submission.
    pub outbox_waker: Arc<Notify>,
    /// What a merge does to published studies: under `Republish`, a study whose registered
    /// version went under another patient gets a new version even if nothing else changed.
    pub patient_merge: PatientMergePolicy,
}

/// What building one claimed study came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// A new manifest version was recorded.
    NewVersion { version: i64, n_instances: usize },
    /// The evidence says what the latest manifest says already.
    Unchanged { version: i64 },
    /// The PACS no longer holds a manifested study.
    Gone,
    /// Not built now; retried later.
    Retry { error: String },
    /// Parked as failed.
    Failed { error: String },
    /// Another scheduler took the study over while this one built it.
    LeaseLost,
}

/// Builds the manifests of due studies.
pub struct StudyScheduler {
    store: Store,
    pacs: Arc<dyn Pacs>,
    config: StudyConfig,
    settings: ManifestSettings,
    uids: Mutex<RootedUids>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for StudyScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyScheduler").field("pacs", &self.pacs.describe()).field("config", &self.config).finish()
    }
}

/// Why a scheduler could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("manifest UID root: {0}")]
    UidRoot(#[from] hie_kos::UidError),
}

/// A build is abandoned (and retried) if it takes longer than this; the lease is twice as long,
/// so an abandoned build never overlaps a takeover.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
const LEASE: Duration = Duration::from_secs(600);
/// The scheduler looks for due studies at least this often, even when nothing woke it: another
/// instance, or the CLI, may have recorded a change in the shared database.
const IDLE_POLL: Duration = Duration::from_secs(2);

impl StudyScheduler {
    pub fn new(
        store: Store,
        pacs: Arc<dyn Pacs>,
        config: StudyConfig,
        settings: ManifestSettings,
    ) -> Result<StudyScheduler, SchedulerError> {
        let uids = RootedUids::new(&settings.uid_root)?;
        Ok(StudyScheduler { store, pacs, config, settings, uids: Mutex::new(uids), wake: Arc::new(Notify::new()) })
    }

    /// Notify this after recording a change so the scheduler looks at once.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Builds due studies until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let built = match self.run_due(now_micros()).await {
                Ok(outcomes) => outcomes.len(),
                Err(error) => {
                    tracing::warn!(%error, "study scheduler: claiming due studies failed");
                    0
                }
            };
            if built > 0 {
                continue;
            }
            let sleep = match self.store.studies_next_due().await {
                Ok(Some(due)) => {
                    let wait = u64::try_from(due.saturating_sub(now_micros())).unwrap_or(0);
                    Duration::from_micros(wait).min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Claims the studies due at `now` (up to the configured concurrency) and builds them side by
    /// side. Returns each outcome.
    pub async fn run_due(&self, now: i64) -> Result<Vec<(String, BuildOutcome)>, StoreError> {
        let claims =
            self.store.studies_claim_due(&self.config.owner, self.config.concurrency.max(1), LEASE, now).await?;
        let builds = claims.into_iter().map(|claim| async move {
            let outcome = self.build(&claim).await;
            (claim.study_instance_uid, outcome)
        });
        Ok(futures::future::join_all(builds).await)
    }

    async fn build(&self, claim: &ClaimedStudy) -> BuildOutcome {
        let study = claim.study_instance_uid.as_str();
        let evidence = match tokio::time::timeout(BUILD_TIMEOUT, self.evidence(study)).await {
            Ok(evidence) => evidence,
            Err(_) => Err(PacsError::Unreachable(format!("no answer within {} s", BUILD_TIMEOUT.as_secs()))),
        };
        let result = match evidence {
            Ok(evidence) => self.record(claim, &evidence).await,
            Err(PacsError::UnknownStudy(_)) if claim.manifest_version > 0 => self.gone(claim).await,
            Err(error) => self.retry_or_fail(claim, &error.to_string()).await,
        };
        let outcome = match result {
            Ok(Some(outcome)) => outcome,
            Ok(None) => BuildOutcome::LeaseLost,
            Err(error) => BuildOutcome::Retry { error: format!("store: {error}") },
        };
        match &outcome {
            BuildOutcome::NewVersion { version, n_instances } => {
                tracing::info!(study, version, n_instances, "manifest built")
            }
            BuildOutcome::Unchanged { version } => tracing::debug!(study, version, "manifest unchanged"),
            BuildOutcome::Gone => tracing::info!(study, "study gone from the PACS"),
            BuildOutcome::Retry { error } => tracing::warn!(study, %error, "manifest not built; retrying later"),
            BuildOutcome::Failed { error } => tracing::error!(study, %error, "manifest failed; parked"),
            BuildOutcome::LeaseLost => tracing::warn!(study, "study taken over by another scheduler"),
        }
        outcome
    }

    async fn evidence(&self, study: &str) -> Result<StudyEvidence, PacsError> {
        match self.config.evidence {
            EvidenceSource::Pacs => self.pacs.study_evidence(study).await,
            EvidenceSource::Received => {
                let received = self.store.received_instances(study).await.map_err(|error| {
                    PacsError::Unreachable(format!("reading received instances from the store: {error}"))
                })?;
                evidence_from_received(study, &received)
            }
        }
    }

    /// Records a new version when the evidence differs from the latest manifest.
    async fn record(&self, claim: &ClaimedStudy, evidence: &StudyEvidence) -> Result<Option<BuildOutcome>, StoreError> {
        let study = claim.study_instance_uid.as_str();
        let study_date = study_date(evidence);
        let fingerprint = match fingerprint(evidence, &self.settings) {
            Ok(fingerprint) => fingerprint,
            Err(error) => return self.park(claim, &format!("manifest: {error}")).await,
        };
        let latest = self.store.manifests(study).await?.pop();
        let mut moved = false;
        if let (Some(latest), Some(hook)) = (&latest, &self.config.publish)
            && latest.fingerprint == fingerprint
            && hook.patient_merge == PatientMergePolicy::Republish
        {
            moved = self.registered_for_another_patient(hook, study, latest.version).await?;
            if moved {
                tracing::info!(study, "registered under a patient merged away; a new version goes under the survivor");
            }
        }
        if let Some(latest) = latest.filter(|latest| latest.fingerprint == fingerprint && !moved) {
            let finish = Finish::Current { manifest_version: latest.version, study_date: study_date.as_deref() };
            let now = now_micros();
            let mut tx = self.store.begin().await?;
            if !studies::finish_claim(&mut tx, claim, finish, now).await? {
                tx.rollback().await?;
                return Ok(None);
            }
            // Unchanged, but not published (publishing was off, or its submission failed or was
            // superseded): a request, a poll or an arrival is the moment to publish it. A failed
            // submission is put back (its outbox item blocks the patient's key until then).
            let pending = match &self.config.publish {
                Some(hook) => {
                    self.ensure_published(&mut tx, hook, study, latest.version, &latest.sop_instance_uid, now).await?
                }
                None => Unpublished::Nothing,
            };
            tx.commit().await?;
            let queued = match pending {
                Unpublished::Queued => true,
                Unpublished::Failed(id) => self.store.submission_requeue(id, now_micros()).await?,
                Unpublished::Nothing => false,
            };
            if let (true, Some(hook)) = (queued, &self.config.publish) {
                hook.outbox_waker.notify_one();
            }
            return Ok(Some(BuildOutcome::Unchanged { version: latest.version }));
        }
        let version = claim.manifest_version + 1;
        let kos = {
            // A poisoned lock only means another build panicked mid-draw; the counter is still good.
            let mut uids = self.uids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            build_manifest(evidence, &self.settings, version, &mut *uids)
        };
        let (bytes, series_instance_uid, sop_instance_uid) = match kos {
            Ok(built) => built,
            Err(error) => return self.park(claim, &format!("manifest: {error}")).await,
        };
        let n_instances = evidence.n_instances();
        let (modalities, body_parts) = series_facts(evidence);
        let referenced = referenced_instances(evidence);
        let manifest = NewManifest {
            study_instance_uid: study,
            version,
            sop_instance_uid: &sop_instance_uid,
            series_instance_uid: &series_instance_uid,
            n_series: i64::try_from(evidence.series.len()).unwrap_or(i64::MAX),
            n_instances: i64::try_from(n_instances).unwrap_or(i64::MAX),
            fingerprint: &fingerprint,
            kos: &bytes,
            modalities: &modalities,
            body_parts: &body_parts,
            instances: &referenced,
        };
        let now = now_micros();
        let mut tx = self.store.begin().await?;
        let finish = Finish::Current { manifest_version: version, study_date: study_date.as_deref() };
        if !studies::finish_claim(&mut tx, claim, finish, now).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        studies::record_manifest(&mut tx, &manifest, now).await?;
        if let Some(hook) = &self.config.publish {
            let key = self.ordering_key(hook, &bytes, study).await?;
            let submission_set_unique_id = self.draw_uid();
            publish::enqueue_publication(
                &mut tx,
                study,
                version,
                &sop_instance_uid,
                &key,
                &submission_set_unique_id,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        if let Some(hook) = &self.config.publish {
            hook.outbox_waker.notify_one();
        }
        Ok(Some(BuildOutcome::NewVersion { version, n_instances }))
    }

    /// The PACS no longer holds a manifested study: `gone`, and (publishing on) its registered
    /// manifest queued for deprecation in the same transaction.
    async fn gone(&self, claim: &ClaimedStudy) -> Result<Option<BuildOutcome>, StoreError> {
        let study = claim.study_instance_uid.as_str();
        let now = now_micros();
        let latest = match &self.config.publish {
            Some(_) => self.store.latest_manifest(study).await?,
            None => None,
        };
        let mut tx = self.store.begin().await?;
        if !studies::finish_claim(&mut tx, claim, Finish::Gone, now).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        if let (Some(hook), Some((row, kos))) = (&self.config.publish, &latest) {
            let key = self.ordering_key(hook, kos, study).await?;
            let submission_set_unique_id = self.draw_uid();
            publish::enqueue_deprecation(
                &mut tx,
                study,
                row.version,
                &row.sop_instance_uid,
                &key,
                &submission_set_unique_id,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        if let Some(hook) = &self.config.publish {
            hook.outbox_waker.notify_one();
        }
        Ok(Some(BuildOutcome::Gone))
    }

    /// An unchanged version that is not published (publishing was off, its submission failed or
    /// was superseded) is published now: queued in `tx`, or its failed submission named so the
    /// caller puts it back after the commit (its outbox item blocks the patient's key until then).
    async fn ensure_published(
        &self,
        tx: &mut hie_store::Tx<'_>,
        hook: &PublishHook,
        study: &str,
        version: i64,
        sop_instance_uid: &str,
        now: i64,
    ) -> Result<Unpublished, StoreError> {
        let publication = self.store.publication_of(study, version).await?;
        match publication {
            Some(submission) if submission.state == "failed" => return Ok(Unpublished::Failed(submission.id)),
            Some(submission) if submission.state != "superseded" => return Ok(Unpublished::Nothing),
            _ => {}
        }
        let Some((_, kos)) = self.store.manifest(study, version).await? else { return Ok(Unpublished::Nothing) };
        let key = self.ordering_key(hook, &kos, study).await?;
        let submission_set_unique_id = self.draw_uid();
        publish::enqueue_publication(tx, study, version, sop_instance_uid, &key, &submission_set_unique_id, now)
            .await?;
        Ok(Unpublished::Queued)
    }

    /// Whether the study's registered version, its latest (`version`), went under another
    /// affinity-domain patient ID than the one its patient has now (the patient was merged away
    /// since). A later version not registered yet is already on its way under the survivor.
    async fn registered_for_another_patient(
        &self,
        hook: &PublishHook,
        study: &str,
        version: i64,
    ) -> Result<bool, StoreError> {
        let Some(registered) = self.store.last_published(study).await? else { return Ok(false) };
        if registered.manifest_version != version {
            return Ok(false);
        }
        let Some(sent_under) = registered.affinity_patient_id.as_deref() else { return Ok(false) };
        let Some((_, kos)) = self.store.manifest(study, registered.manifest_version).await? else {
            return Ok(false);
        };
        // Our own manifest always reads back; should it not, nothing is known to have moved.
        let Ok(facts) = publish::metadata::kos_facts(&kos) else { return Ok(false) };
        let now_under = publish::affinity_patient_id(&self.store, &hook.domain, &facts).await?;
        Ok(now_under.is_some_and(|now_under| now_under != sent_under))
    }

    /// The ordering key of the study's submissions (its patient's when known).
    async fn ordering_key(&self, hook: &PublishHook, kos: &[u8], study: &str) -> Result<String, StoreError> {
        match publish::metadata::kos_facts(kos) {
            Ok(facts) => publish::ordering_key(&self.store, &hook.domain, &facts, study).await,
            // Our own manifest always reads back; should it not, the study keys its submissions.
            Err(_) => Ok(format!("study:{study}")),
        }
    }

    fn draw_uid(&self) -> String {
        // A poisoned lock only means another build panicked mid-draw; the counter is still good.
        self.uids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_uid()
    }

    async fn retry_or_fail(&self, claim: &ClaimedStudy, error: &str) -> Result<Option<BuildOutcome>, StoreError> {
        if claim.attempts >= self.config.retry.max_attempts {
            return self.park(claim, error).await;
        }
        let delay = self.config.retry.backoff(claim.attempts);
        let at = now_micros().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
        Ok(self
            .finish(claim, Finish::RetryAt { error, at })
            .await?
            .then(|| BuildOutcome::Retry { error: error.to_owned() }))
    }

    async fn park(&self, claim: &ClaimedStudy, error: &str) -> Result<Option<BuildOutcome>, StoreError> {
        Ok(self
            .finish(claim, Finish::Failed { error })
            .await?
            .then(|| BuildOutcome::Failed { error: error.to_owned() }))
    }

    async fn finish(&self, claim: &ClaimedStudy, finish: Finish<'_>) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let recorded = studies::finish_claim(&mut tx, claim, finish, now_micros()).await?;
        tx.commit().await?;
        Ok(recorded)
    }
}

/// What [`StudyScheduler::ensure_published`] did.
enum Unpublished {
    Queued,
    Failed(i64),
    Nothing,
}

/// Records a C-STORE arrival for `study` in the caller's transaction: due once quiet.
pub async fn note_arrival(
    tx: &mut hie_store::Tx<'_>,
    study_instance_uid: &str,
    quiet_period: Duration,
    now: i64,
) -> Result<(), StoreError> {
    let change = StudyChange {
        study_instance_uid,
        source: ChangeSource::CStore,
        due_at: now.saturating_add(micros(quiet_period)),
        pacs_instances: None,
    };
    studies::note_change(tx, &change, now).await
}

/// An explicit request: the study is due now, whatever its state (a failed study is retried).
pub async fn request(store: &Store, study_instance_uid: &str) -> Result<(), StoreError> {
    let now = now_micros();
    let change = StudyChange { study_instance_uid, source: ChangeSource::Request, due_at: now, pacs_instances: None };
    let mut tx = store.begin().await?;
    studies::note_change(&mut tx, &change, now).await?;
    tx.commit().await
}

/// What one poll found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Studies the broker had not heard of.
    pub new: usize,
    /// Known studies whose instance count changed, or that came back after being gone.
    pub changed: usize,
    /// Manifested studies in the window that the PACS no longer lists.
    pub vanished: usize,
}

impl PollReport {
    pub fn total(&self) -> usize {
        self.new + self.changed + self.vanished
    }
}

/// Asks the PACS for the studies of the last `lookback_days` and records a change for each that
/// is new, whose instance count differs from the last poll, or that vanished. Counts are what
/// let a poll see late arrivals and deletions; a PACS that reports none only reveals new studies.
pub async fn poll_once(
    store: &Store,
    pacs: &dyn Pacs,
    lookback_days: u32,
    quiet_period: Duration,
    now: i64,
) -> Result<PollReport, PollError> {
    let now_secs = u64::try_from(now / 1_000_000).unwrap_or(0);
    let from_secs = now_secs.saturating_sub(u64::from(lookback_days) * 86_400);
    let from_date = hie_core::clock::hl7_timestamp(from_secs)[..8].to_owned();
    let listing = pacs.list_studies(&from_date).await?;
    let known: std::collections::HashMap<String, studies::KnownStudy> = store
        .studies_for_poll(&from_date)
        .await?
        .into_iter()
        .map(|study| (study.study_instance_uid.clone(), study))
        .collect();
    let listed: std::collections::HashSet<&str> =
        listing.iter().map(|study| study.study_instance_uid.as_str()).collect();
    let due_at = now.saturating_add(micros(quiet_period));
    let mut report = PollReport::default();
    let mut changes: Vec<(&str, Option<i64>)> = Vec::new();
    for StudySummary { study_instance_uid, n_instances } in &listing {
        let count = n_instances.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        match known.get(study_instance_uid) {
            None => {
                report.new += 1;
                changes.push((study_instance_uid, count));
            }
            Some(study) if study.state == "gone" || (count.is_some() && count != study.pacs_instances) => {
                report.changed += 1;
                changes.push((study_instance_uid, count));
            }
            Some(_) => {}
        }
    }
    for study in known.values() {
        let in_window = study.study_date.as_deref().is_some_and(|date| date >= from_date.as_str());
        if study.state == "current" && in_window && !listed.contains(study.study_instance_uid.as_str()) {
            report.vanished += 1;
            changes.push((&study.study_instance_uid, None));
        }
    }
    if !changes.is_empty() {
        let mut tx = store.begin().await?;
        for (study_instance_uid, pacs_instances) in changes {
            let change = StudyChange { study_instance_uid, source: ChangeSource::Poll, due_at, pacs_instances };
            studies::note_change(&mut tx, &change, now).await?;
        }
        tx.commit().await?;
    }
    Ok(report)
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Pacs(#[from] PacsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Polls the PACS every `interval` until `shutdown`, waking the scheduler when something changed.
pub async fn run_poller(
    store: Store,
    pacs: Arc<dyn Pacs>,
    interval: Duration,
    lookback_days: u32,
    quiet_period: Duration,
    scheduler: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match poll_once(&store, pacs.as_ref(), lookback_days, quiet_period, now_micros()).await {
            Ok(report) if report.total() > 0 => {
                tracing::info!(new = report.new, changed = report.changed, vanished = report.vanished, "PACS poll");
                scheduler.notify_one();
            }
            Ok(_) => tracing::debug!("PACS poll: no change"),
            Err(error) => tracing::warn!(%error, pacs = %pacs.describe(), "PACS poll failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The evidence in the headers our listener received for `study`.
pub fn evidence_from_received(study: &str, received: &[studies::ReceivedInstance]) -> Result<StudyEvidence, PacsError> {
    if received.is_empty() {
        return Err(PacsError::UnknownStudy(study.to_owned()));
    }
    let mut builder = StudyEvidenceBuilder::for_study(study);
    for instance in received {
        // The listener keeps each header as a Part 10 object cut before Pixel Data.
        if let Err(error) = builder.add_part10(&instance.header) {
            tracing::warn!(study, sop_instance_uid = %instance.sop_instance_uid, %error, "skipped a received header");
        }
    }
    builder
        .build()
        .map_err(|_| PacsError::BadAnswer(format!("no readable header among {} received instance(s)", received.len())))
}

/// A hex SHA-256 of what the manifest says, its own identity (UIDs, date, instance number) aside:
/// the manifest built with fixed UIDs and a fixed date, hashed.
pub fn fingerprint(evidence: &StudyEvidence, settings: &ManifestSettings) -> Result<String, hie_kos::KosError> {
    struct FixedUids(u32);
    impl UidSource for FixedUids {
        fn next_uid(&mut self) -> String {
            self.0 += 1;
            format!("2.25.{}", self.0)
        }
    }
    let options = manifest_options(settings, "19700101", "000000", 1);
    let kos = hie_kos::build_kos(evidence, &options, &mut FixedUids(0))?;
    let bytes = hie_kos::to_part10_bytes(&kos)?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Builds version `version` of the manifest: its Part 10 bytes, Series and SOP Instance UIDs.
pub fn build_manifest(
    evidence: &StudyEvidence,
    settings: &ManifestSettings,
    version: i64,
    uids: &mut impl UidSource,
) -> Result<(Vec<u8>, String, String), hie_kos::KosError> {
    let timestamp = hie_core::clock::hl7_timestamp(u64::try_from(now_micros() / 1_000_000).unwrap_or(0));
    let (date, time) = timestamp.split_at(8);
    let options = manifest_options(settings, date, time, u32::try_from(version).unwrap_or(u32::MAX));
    let kos = hie_kos::build_kos(evidence, &options, uids)?;
    let summary = hie_kos::summarize_manifest(&kos)?;
    let bytes = hie_kos::to_part10_bytes(&kos)?;
    Ok((bytes, summary.series_instance_uid, summary.sop_instance_uid))
}

fn manifest_options(settings: &ManifestSettings, date: &str, time: &str, instance_number: u32) -> KosOptions {
    let mut options =
        KosOptions::new(settings.retrieve_ae_title.as_str(), settings.repository_unique_id.as_str(), date, time);
    options.institution_name = settings.institution_name.clone();
    options.instance_number = instance_number;
    options
}

/// Every instance the manifest references, with its series: what retrievals of the version may
/// serve (RAD-69 authorization).
fn referenced_instances(evidence: &StudyEvidence) -> Vec<ReferencedInstance<'_>> {
    evidence
        .series
        .iter()
        .flat_map(|series| {
            series.instances.iter().map(|instance| ReferencedInstance {
                series_instance_uid: &series.series_instance_uid,
                sop_instance_uid: &instance.sop_instance_uid,
                sop_class_uid: &instance.sop_class_uid,
            })
        })
        .collect()
}

/// The distinct Modality and Body Part Examined values of the series, backslash-separated.
fn series_facts(evidence: &StudyEvidence) -> (String, String) {
    let mut modalities: Vec<&str> = Vec::new();
    let mut body_parts: Vec<&str> = Vec::new();
    for series in &evidence.series {
        for (values, value) in [(&mut modalities, &series.modality), (&mut body_parts, &series.body_part_examined)] {
            let value = value.trim();
            if !value.is_empty() && !values.contains(&value) {
                values.push(value);
            }
        }
    }
    (modalities.join("\\"), body_parts.join("\\"))
}

fn study_date(evidence: &StudyEvidence) -> Option<String> {
    let date = evidence.patient_and_study.get(dicom_dictionary_std::tags::STUDY_DATE)?.to_str().ok()?;
    let date = date.trim().to_owned();
    (date.len() == 8 && date.bytes().all(|byte| byte.is_ascii_digit())).then_some(date)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
