//! The `dimse` PACS: queries by C-FIND and retrieval by C-GET or C-MOVE (DICOM PS3.4 C.4, Study
//! Root), over hie-dicom-net's associations.
//!
//! Associations come from pools (hie-dicom-net `AssociationPool`, each at most
//! `max_associations` open): one for queries (Study Root FIND), one per list of transfer
//! syntaxes for C-GET (Study Root GET and the storage classes with the SCP role, proposed in the
//! caller's transfer syntaxes, in order), one for C-MOVE (Study Root MOVE). The PACS's host name
//! is resolved at each new association. A pooled association that turns out dead on first use
//! is replaced once, by a fresh one, before the operation fails.
//!
//! - A study's evidence is ONE IMAGE-level C-FIND: the study's UID and every attribute of
//!   `query::EVIDENCE_TAGS` as a return key (sequences as empty sequences). Up to
//!   [`MAX_STUDY_INSTANCES`] matches (and [`MAX_QUERY_BYTES`] of them) are taken; a larger study
//!   is refused rather than half-manifested. A PACS that leaves SOP Class UID (0008,0016) out of
//!   its IMAGE-level answers (dcmtk's dcmqrscp does) has the headers of those instances fetched
//!   (C-GET or C-MOVE, the pixel data discarded as it streams in), since a manifest must name
//!   each instance's class.
//! - A poll's listing is a STUDY-level C-FIND by Study Date range with Number of Study Related
//!   Instances (0020,1208).
//! - Which instances exist: a series asked for whole (as many distinct instances as its Number
//!   of Series Related Instances, from one SERIES-level C-FIND per study) is found by that count
//!   and one probe instance, which gives its SOP Class UID. The rest by IMAGE-level C-FINDs with
//!   a list of SOP Instance UIDs (list matching, PS3.4 C.2.2.2.2; Orthanc and dcmqrscp do it).
//!   Instances a list query did not return are looked up again series by series (every
//!   instance of the series), so a PACS without list matching gives the right answer, only
//!   more slowly.
//! - Retrieval is one C-GET (or C-MOVE to our own listener, through the `MoveRouter` it shares)
//!   per series: at SERIES level for a whole series, else at IMAGE level with the list of the
//!   requested SOP Instance UIDs (a PACS resolves a long list slowly). Each
//!   C-STORE sub-operation's fragments go into the caller's bounded channel as they arrive, so
//!   memory stays at the channel's capacity times one PDU, whatever the study's size. Dropping
//!   the receiver cancels: C-CANCEL, the sub-operations in flight refused, the final response
//!   awaited, and the association released, never returned to the pool half-used.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use dicom_core::dictionary::DataDictionary;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::InMemDicomObject;
use hie_broker::ports::{
    FoundInstance, InstanceKey, Pacs, PacsError, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary,
};
use hie_dicom_net::client::UNCOMPRESSED;
use hie_dicom_net::scu::{self, RetrieveOutcome};
use hie_dicom_net::{
    AssociationPool, ClientOptions, FindLimits, FindOutcome, HeaderCollector, InstanceInfo, MetaIdentity, MoveRouter,
    NetError, PoolOptions, PooledAssociation, ProposedContext, RetrieveOptions, StoreSink, Timeouts, part10_header,
};
use hie_dimse::{Status, uids};
use hie_kos::{StudyEvidence, StudyEvidenceBuilder};
use tokio::sync::mpsc;

use super::query::{EVIDENCE_TAGS, clean_query_result, counts_by_series, text};
use super::{DimseSettings, Retrieve};

/// Most instances a study's evidence query takes (more: the study is refused, not truncated).
pub const MAX_STUDY_INSTANCES: usize = 25_000;
/// Most identifier bytes a query keeps: an IMAGE-level match with the evidence keys is about
/// 1 KiB, so [`MAX_STUDY_INSTANCES`] fit with room to spare.
pub const MAX_QUERY_BYTES: usize = 96 * 1024 * 1024;
/// Most studies a poll's listing takes (more: the poll fails rather than see studies vanish).
pub const MAX_LISTED_STUDIES: usize = 100_000;
/// SOP Instance UIDs per list in one identifier: at most 65 bytes each, this stays under the
/// 64 KiB a UI value can hold in Explicit VR (PS3.5 7.1.2, a 16-bit length).
pub const MAX_UIDS_PER_REQUEST: usize = 500;

/// Most series a study's count query takes (more: every series is listed instead).
pub const MAX_STUDY_SERIES: usize = 10_000;
/// Fewest instances asked of one series for its count to be checked first: below it one list
/// query is as cheap as the count query and the probe.
const MIN_COUNTED_SERIES: usize = 2;

/// A DIMSE PACS.
pub struct DimsePacs {
    settings: DimseSettings,
    client: ClientOptions,
    pool_options: PoolOptions,
    queries: AssociationPool,
    /// C-GET pools by the transfer syntaxes proposed for the storage contexts.
    gets: Mutex<Vec<(Vec<String>, AssociationPool)>>,
    moves: AssociationPool,
    router: MoveRouter,
}

impl std::fmt::Debug for DimsePacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimsePacs").field("pacs", &self.describe()).field("retrieve", &self.settings.retrieve).finish()
    }
}

impl DimsePacs {
    /// An adapter for `settings`; `router` is the one our listener routes C-MOVE sub-operations
    /// through (used when `settings.retrieve` is C-MOVE). Nothing is connected yet.
    pub fn new(settings: DimseSettings, router: MoveRouter) -> DimsePacs {
        let mut client = ClientOptions::new(settings.our_ae_title.clone(), settings.ae_title.clone());
        client.timeouts =
            Timeouts { connect: settings.connect_timeout, association: settings.timeout, dimse: settings.timeout };
        let pool_options = PoolOptions {
            max_open: settings.max_associations.max(1),
            acquire_timeout: settings.timeout,
            ..PoolOptions::default()
        };
        let queries = AssociationPool::for_host(
            settings.host.clone(),
            settings.port,
            client.clone(),
            vec![ProposedContext::new(uids::STUDY_ROOT_FIND, UNCOMPRESSED), ProposedContext::verification()],
            pool_options,
        );
        let moves = AssociationPool::for_host(
            settings.host.clone(),
            settings.port,
            client.clone(),
            vec![ProposedContext::new(uids::STUDY_ROOT_MOVE, UNCOMPRESSED)],
            pool_options,
        );
        DimsePacs { settings, client, pool_options, queries, gets: Mutex::new(Vec::new()), moves, router }
    }

    /// C-ECHO: whether the PACS answers (for start-up checks and diagnostics).
    pub async fn echo(&self) -> Result<(), PacsError> {
        let mut pooled = self.queries.acquire().await.map_err(|error| self.pacs_error(error))?;
        match scu::echo(&mut pooled).await {
            Ok(Status::SUCCESS) => {
                pooled.give_back();
                Ok(())
            }
            Ok(status) => {
                pooled.give_back();
                Err(PacsError::Refused(format!("{}: C-ECHO answered {status}", self.describe())))
            }
            Err(error) => {
                settle(pooled, false);
                Err(self.pacs_error(error))
            }
        }
    }

    /// One C-FIND on a pooled association, retried once on a fresh association when a reused
    /// one turns out dead.
    async fn find(&self, identifier: &InMemDicomObject, limits: &FindLimits) -> Result<FindOutcome, PacsError> {
        let mut pooled = self.queries.acquire().await.map_err(|error| self.pacs_error(error))?;
        let mut retried = false;
        loop {
            match scu::find(&mut pooled, uids::STUDY_ROOT_FIND, identifier, limits).await {
                Err(error) if error.is_connection_lost() && pooled.was_reused() && !retried => {
                    tracing::debug!(pacs = %self.describe(), %error, "pooled association dead; retrying on a fresh one");
                    pooled.discard();
                    pooled = self.queries.acquire_fresh().await.map_err(|error| self.pacs_error(error))?;
                    retried = true;
                }
                Ok(outcome) => {
                    pooled.give_back();
                    return Ok(outcome);
                }
                Err(error) => {
                    settle(pooled, matches!(error, NetError::Refused { .. }));
                    return Err(self.pacs_error(error));
                }
            }
        }
    }

    /// Retrieves `instances` series by series into `sink`; what did not arrive is in the
    /// report's failures. Fails only when nothing arrived and the PACS could not be used at all.
    async fn fetch<S: Collect>(
        &self,
        instances: &[InstanceKey],
        transfer_syntaxes: &[String],
        sink: &mut S,
    ) -> Result<BTreeMap<String, String>, PacsError> {
        let mut failures = BTreeMap::new();
        let mut first_error = None;
        let mut counts: Option<(&str, HashMap<String, usize>)> = None;
        for ((study, series), sops) in by_series(instances) {
            if sops.len() >= MIN_COUNTED_SERIES && counts.as_ref().is_none_or(|(of, _)| *of != study) {
                counts = Some((study, self.series_counts(study).await));
            }
            let whole = sops.len() >= MIN_COUNTED_SERIES
                && counts.as_ref().is_some_and(|(of, counts)| *of == study && counts.get(series) == Some(&sops.len()));
            // A whole series is asked for at SERIES level, without a list: a PACS resolves a
            // long SOP Instance UID list more slowly than a series (Orthanc 1.10, 500 UIDs: the
            // first sub-operation came 0.4-0.5 s later than for the series, docs/performance.md).
            let chunks: Vec<&[&str]> =
                if whole { vec![sops.as_slice()] } else { sops.chunks(MAX_UIDS_PER_REQUEST).collect() };
            for chunk in chunks {
                if sink.is_cancelled() {
                    for sop in chunk {
                        failures.insert((*sop).to_owned(), "cancelled: the receiver went away".to_owned());
                    }
                    continue;
                }
                let identifier = if whole {
                    series_identifier(study, series)
                } else {
                    image_identifier(study, Some(series), chunk, &[])
                };
                let result = self.fetch_chunk(&identifier, chunk.len(), transfer_syntaxes, sink).await;
                let answered = result.as_ref().is_ok_and(|outcome| !outcome.cancelled) && !sink.is_cancelled();
                let reason = self.failure_reason(&result);
                if let Err(error) = result {
                    first_error.get_or_insert(error);
                }
                let missing: Vec<&str> = chunk.iter().copied().filter(|sop| !sink.taken().contains(*sop)).collect();
                // A PACS may fail a whole list for one instance it does not hold (Orthanc does:
                // "Cannot locate resource"): the others are asked for one by one.
                if answered && chunk.len() > 1 && !missing.is_empty() {
                    for sop in missing {
                        if sink.is_cancelled() {
                            failures.insert(sop.to_owned(), "cancelled: the receiver went away".to_owned());
                            continue;
                        }
                        let identifier = image_identifier(study, Some(series), &[sop], &[]);
                        let result = self.fetch_chunk(&identifier, 1, transfer_syntaxes, sink).await;
                        if !sink.taken().contains(sop) {
                            let reason = sink.refusal(sop).unwrap_or_else(|| self.failure_reason(&result));
                            failures.insert(sop.to_owned(), reason);
                        }
                    }
                    continue;
                }
                for sop in missing {
                    let reason = sink.refusal(sop).unwrap_or_else(|| reason.clone());
                    failures.entry(sop.to_owned()).or_insert(reason);
                }
            }
        }
        match first_error {
            Some(error) if sink.taken().is_empty() && !sink.is_cancelled() => Err(error),
            _ => Ok(failures),
        }
    }

    /// Number of Series Related Instances (0020,1209) of each series of `study`, by one
    /// SERIES-level C-FIND (PS3.4 C.6.2.1.2); empty when the query fails or the PACS leaves the
    /// count out, so that every series is then listed instance by instance.
    async fn series_counts(&self, study: &str) -> HashMap<String, usize> {
        let mut identifier = InMemDicomObject::new_empty();
        put(&mut identifier, tags::QUERY_RETRIEVE_LEVEL, PrimitiveValue::from("SERIES"));
        put(&mut identifier, tags::STUDY_INSTANCE_UID, PrimitiveValue::from(study));
        put(&mut identifier, tags::SERIES_INSTANCE_UID, PrimitiveValue::Empty);
        put(&mut identifier, tags::NUMBER_OF_SERIES_RELATED_INSTANCES, PrimitiveValue::Empty);
        let limits = FindLimits { max_matches: MAX_STUDY_SERIES, max_bytes: MAX_QUERY_BYTES, timeout: None };
        match self.find(&identifier, &limits).await {
            Ok(outcome) if outcome.stopped.is_none() => counts_by_series(&outcome.matches),
            Ok(_) => HashMap::new(),
            Err(error) => {
                tracing::debug!(pacs = %self.describe(), %error, "series counts unavailable");
                HashMap::new()
            }
        }
    }

    /// Why the instances a retrieval did not deliver are missing.
    fn failure_reason(&self, result: &Result<RetrieveOutcome, PacsError>) -> String {
        match result {
            Ok(outcome) if outcome.cancelled => "cancelled: the receiver went away".to_owned(),
            Ok(outcome) => match &outcome.verdict {
                Err(failure) => format!("{}: {failure}", self.describe()),
                Ok(_) => format!("{}: not delivered", self.describe()),
            },
            Err(error) => error.to_string(),
        }
    }

    /// One C-GET or C-MOVE, retried once on a fresh association when a reused one turns out
    /// dead before any instance began.
    async fn fetch_chunk<S: Collect>(
        &self,
        identifier: &InMemDicomObject,
        expected: usize,
        transfer_syntaxes: &[String],
        sink: &mut S,
    ) -> Result<RetrieveOutcome, PacsError> {
        let pool = match self.settings.retrieve {
            Retrieve::CGet => self.get_pool(transfer_syntaxes),
            Retrieve::CMove => self.moves.clone(),
        };
        let options = RetrieveOptions { timeout: None, expected: Some(u32::try_from(expected).unwrap_or(u32::MAX)) };
        let our_ae = self.settings.our_ae_title.as_str();
        let mut pooled = pool.acquire().await.map_err(|error| self.pacs_error(error))?;
        let mut retried = false;
        loop {
            sink.start_attempt();
            let result = match self.settings.retrieve {
                Retrieve::CGet => scu::get(&mut pooled, uids::STUDY_ROOT_GET, identifier, sink, &options).await,
                Retrieve::CMove => {
                    let (_, mut registration) = self.router.register(our_ae).map_err(|error| self.pacs_error(error))?;
                    scu::move_into(
                        &mut pooled,
                        uids::STUDY_ROOT_MOVE,
                        identifier,
                        our_ae,
                        &mut registration,
                        sink,
                        &options,
                    )
                    .await
                }
            };
            match result {
                Err(error) if error.is_connection_lost() && pooled.was_reused() && !retried && !sink.begun() => {
                    tracing::debug!(pacs = %self.describe(), %error, "pooled association dead; retrying on a fresh one");
                    pooled.discard();
                    pooled = pool.acquire_fresh().await.map_err(|error| self.pacs_error(error))?;
                    retried = true;
                }
                Err(error) => {
                    settle(pooled, false);
                    return Err(self.pacs_error(error));
                }
                Ok(outcome) => {
                    if outcome.cancelled || outcome.timed_out.is_some() {
                        // Clean (the final response came) but not to be reused after a cancel.
                        if let Err(error) = pooled.close().await {
                            tracing::debug!(pacs = %self.describe(), %error, "release after C-CANCEL failed");
                        }
                    } else {
                        pooled.give_back();
                    }
                    return Ok(outcome);
                }
            }
        }
    }

    /// The C-GET pool for these transfer syntaxes; a few lists are kept, further ones get a
    /// pool of their own that lasts one retrieval.
    fn get_pool(&self, transfer_syntaxes: &[String]) -> AssociationPool {
        let mut pools = self.gets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, pool)) = pools.iter().find(|(key, _)| key.as_slice() == transfer_syntaxes) {
            return pool.clone();
        }
        let offered: Vec<&str> = transfer_syntaxes.iter().map(String::as_str).collect();
        let mut contexts = vec![ProposedContext::new(uids::STUDY_ROOT_GET, UNCOMPRESSED)];
        contexts.extend(ProposedContext::storage_scp(&offered));
        let pool = AssociationPool::for_host(
            self.settings.host.clone(),
            self.settings.port,
            self.client.clone(),
            contexts,
            self.pool_options,
        );
        if pools.len() < MAX_GET_POOLS {
            pools.push((transfer_syntaxes.to_vec(), pool.clone()));
        }
        pool
    }

    /// Fetches the headers of `instances` (pixel data discarded) into `builder`.
    async fn fetch_headers(
        &self,
        instances: &[InstanceKey],
        builder: &mut StudyEvidenceBuilder,
    ) -> Result<(), PacsError> {
        let mut sink = HeaderSink::new(builder, &self.settings.ae_title);
        let transfer_syntaxes: Vec<String> = HEADER_TRANSFER_SYNTAXES.iter().map(|ts| (*ts).to_owned()).collect();
        let failures = self.fetch(instances, &transfer_syntaxes, &mut sink).await?;
        match failures.iter().next() {
            None => Ok(()),
            Some((sop, reason)) => Err(PacsError::Unreachable(format!(
                "{}: {} of {} instances answered without SOP Class UID, and their headers could not be fetched \
                 (first: {sop}: {reason})",
                self.describe(),
                failures.len(),
                instances.len()
            ))),
        }
    }

    /// Takes out of `wanted` the series asked for whole (as many distinct instances asked as
    /// the PACS counts in the series), found by their count and one instance each (which also
    /// gives the series' SOP Class UID), rather than by a list of every SOP Instance UID: a
    /// PACS matches a long list slowly (Orthanc 1.10: 0.7-1.3 s more for 500 UIDs than for one
    /// command without a list). The same judgement as
    /// the `dicomweb` PACS's; a series whose probe finds nothing is left to the list.
    async fn find_whole_series<'k>(
        &self,
        study: &str,
        wanted: &mut HashMap<&'k str, &'k InstanceKey>,
        found: &mut Vec<FoundInstance>,
    ) -> Result<(), PacsError> {
        let mut asked: BTreeMap<&str, Vec<&'k InstanceKey>> = BTreeMap::new();
        for &key in wanted.values() {
            asked.entry(key.series_instance_uid.as_str()).or_default().push(key);
        }
        if asked.values().all(|keys| keys.len() < MIN_COUNTED_SERIES) {
            return Ok(());
        }
        let counts = self.series_counts(study).await;
        let limits = FindLimits::default();
        for (series, keys) in asked {
            if keys.len() < MIN_COUNTED_SERIES || counts.get(series) != Some(&keys.len()) {
                continue;
            }
            let Some(probe) = keys.iter().map(|key| key.sop_instance_uid.as_str()).min() else { continue };
            let identifier = image_identifier(study, Some(series), &[probe], &[tags::SOP_CLASS_UID]);
            let outcome = self.find(&identifier, &limits).await?;
            let Some(sop_class_uid) = outcome
                .matches
                .iter()
                .find(|instance| text(instance, tags::SOP_INSTANCE_UID).as_deref() == Some(probe))
                .and_then(|instance| text(instance, tags::SOP_CLASS_UID))
            else {
                continue;
            };
            for key in keys {
                wanted.remove(key.sop_instance_uid.as_str());
                found.push(FoundInstance {
                    key: key.clone(),
                    sop_class_uid: sop_class_uid.clone(),
                    stored_transfer_syntax_uid: None,
                });
            }
        }
        Ok(())
    }

    fn pacs_error(&self, error: NetError) -> PacsError {
        let text = format!("{}: {error}", self.describe());
        match error {
            NetError::Refused { .. }
            | NetError::Rejected { .. }
            | NetError::NoAcceptedContext { .. }
            | NetError::InvalidRequest(_) => PacsError::Refused(text),
            NetError::PeerViolation(_) => PacsError::BadAnswer(text),
            _ => PacsError::Unreachable(text),
        }
    }
}

impl Pacs for DimsePacs {
    fn describe(&self) -> String {
        format!("dimse {}@{}:{}", self.settings.ae_title, self.settings.host, self.settings.port)
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        Box::pin(async move {
            if !hie_kos::is_valid_uid(study_instance_uid) {
                return Err(PacsError::UnknownStudy(study_instance_uid.to_owned()));
            }
            let identifier = evidence_identifier(study_instance_uid);
            let limits = FindLimits { max_matches: MAX_STUDY_INSTANCES, max_bytes: MAX_QUERY_BYTES, timeout: None };
            let outcome = self.find(&identifier, &limits).await?;
            if let Some(stop) = outcome.stopped {
                return Err(PacsError::BadAnswer(format!(
                    "{}: study {study_instance_uid} has more instances than a manifest is built for ({stop:?}; \
                     at most {MAX_STUDY_INSTANCES} instances, {MAX_QUERY_BYTES} bytes of answers)",
                    self.describe()
                )));
            }
            if outcome.matches.is_empty() {
                return Err(PacsError::UnknownStudy(study_instance_uid.to_owned()));
            }
            let n_matches = outcome.matches.len();
            let mut builder = StudyEvidenceBuilder::for_study(study_instance_uid);
            let mut lacking_class = Vec::new();
            for mut instance in outcome.matches {
                clean_query_result(&mut instance);
                if text(&instance, tags::SOP_CLASS_UID).is_none()
                    && let (Some(series_instance_uid), Some(sop_instance_uid)) =
                        (text(&instance, tags::SERIES_INSTANCE_UID), text(&instance, tags::SOP_INSTANCE_UID))
                {
                    lacking_class.push(InstanceKey {
                        study_instance_uid: study_instance_uid.to_owned(),
                        series_instance_uid,
                        sop_instance_uid,
                    });
                    continue;
                }
                if let Err(error) = builder.add_object(&instance) {
                    tracing::warn!(study = study_instance_uid, %error, "skipped a C-FIND match");
                }
            }
            if !lacking_class.is_empty() {
                tracing::info!(
                    study = study_instance_uid,
                    n_instances = lacking_class.len(),
                    pacs = %self.describe(),
                    "C-FIND answers lack SOP Class UID; fetching the headers"
                );
                self.fetch_headers(&lacking_class, &mut builder).await?;
            }
            builder.build().map_err(|_| {
                PacsError::BadAnswer(format!(
                    "{}: none of the {n_matches} C-FIND matches of study {study_instance_uid} names an instance",
                    self.describe()
                ))
            })
        })
    }

    fn list_studies<'a>(&'a self, from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        Box::pin(async move {
            if from_date.len() != 8 || !from_date.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(PacsError::BadAnswer(format!("{from_date:?} is not a DICOM date")));
            }
            let mut identifier = InMemDicomObject::new_empty();
            put(&mut identifier, tags::QUERY_RETRIEVE_LEVEL, PrimitiveValue::from("STUDY"));
            // PS3.4 C.2.2.2.5: "date-" matches that date and every later one.
            put(&mut identifier, tags::STUDY_DATE, PrimitiveValue::from(format!("{from_date}-")));
            put(&mut identifier, tags::STUDY_INSTANCE_UID, PrimitiveValue::Empty);
            put(&mut identifier, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, PrimitiveValue::Empty);
            let limits = FindLimits { max_matches: MAX_LISTED_STUDIES, max_bytes: MAX_QUERY_BYTES, timeout: None };
            let outcome = self.find(&identifier, &limits).await?;
            if let Some(stop) = outcome.stopped {
                return Err(PacsError::BadAnswer(format!(
                    "{}: more studies since {from_date} than a poll takes ({stop:?})",
                    self.describe()
                )));
            }
            Ok(outcome
                .matches
                .iter()
                .filter_map(|study| {
                    let study_instance_uid = text(study, tags::STUDY_INSTANCE_UID)?;
                    let n_instances = text(study, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.parse().ok());
                    Some(StudySummary { study_instance_uid, n_instances })
                })
                .collect())
        })
    }

    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(async move {
            let limits = FindLimits { max_matches: MAX_STUDY_INSTANCES, max_bytes: MAX_QUERY_BYTES, timeout: None };
            let mut found: Vec<FoundInstance> = Vec::new();
            let mut by_study: BTreeMap<&str, Vec<&InstanceKey>> = BTreeMap::new();
            for key in instances {
                by_study.entry(key.study_instance_uid.as_str()).or_default().push(key);
            }
            for (study, keys) in by_study {
                let mut wanted: HashMap<&str, &InstanceKey> =
                    keys.iter().map(|key| (key.sop_instance_uid.as_str(), *key)).collect();
                self.find_whole_series(study, &mut wanted, &mut found).await?;
                let sops: Vec<&str> = wanted.keys().copied().collect::<BTreeSet<_>>().into_iter().collect();
                for chunk in sops.chunks(MAX_UIDS_PER_REQUEST) {
                    let identifier =
                        image_identifier(study, None, chunk, &[tags::SERIES_INSTANCE_UID, tags::SOP_CLASS_UID]);
                    let outcome = self.find(&identifier, &limits).await?;
                    take_found(&outcome, &mut wanted, &mut found);
                }
                // PS3.4 C.2.2.2.2 list matching is optional for an SCP: look for what is still
                // missing series by series, without a list.
                let mut missing_series: BTreeSet<&str> = BTreeSet::new();
                missing_series.extend(wanted.values().map(|key| key.series_instance_uid.as_str()));
                for series in missing_series {
                    let identifier = image_identifier(study, Some(series), &[], &[tags::SOP_CLASS_UID]);
                    let outcome = self.find(&identifier, &limits).await?;
                    take_found(&outcome, &mut wanted, &mut found);
                }
            }
            Ok(found)
        })
    }

    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(async move {
            let default: Vec<String>;
            let transfer_syntaxes = if transfer_syntaxes.is_empty() {
                default = UNCOMPRESSED.iter().map(|ts| (*ts).to_owned()).collect();
                &default
            } else {
                transfer_syntaxes
            };
            let mut channel = ChannelSink::new(sink, transfer_syntaxes);
            let failed = self.fetch(instances, transfer_syntaxes, &mut channel).await?;
            Ok(RetrieveReport { sent: channel.sent, failed: failed.into_iter().collect() })
        })
    }
}

/// Returns a loaned association: to the pool when it is clean, else aborted.
fn settle(pooled: PooledAssociation, clean: bool) {
    if clean && pooled.is_open() {
        pooled.give_back();
    } else {
        pooled.discard();
    }
}

/// Moves the matches that name a wanted instance (in the wanted series) into `found`.
fn take_found(outcome: &FindOutcome, wanted: &mut HashMap<&str, &InstanceKey>, found: &mut Vec<FoundInstance>) {
    for instance in &outcome.matches {
        let Some(sop) = text(instance, tags::SOP_INSTANCE_UID) else { continue };
        let Some(key) = wanted.get(sop.as_str()).copied() else { continue };
        if text(instance, tags::SERIES_INSTANCE_UID).is_some_and(|series| series != key.series_instance_uid) {
            continue;
        }
        wanted.remove(sop.as_str());
        found.push(FoundInstance {
            key: key.clone(),
            // Empty when the PACS does not return it at IMAGE level (dcmqrscp).
            sop_class_uid: text(instance, tags::SOP_CLASS_UID).unwrap_or_default(),
            stored_transfer_syntax_uid: None,
        });
    }
}

/// The requested instances by (study, series), SOP Instance UIDs sorted and unique.
fn by_series(instances: &[InstanceKey]) -> BTreeMap<(&str, &str), Vec<&str>> {
    let mut groups: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for key in instances {
        groups
            .entry((key.study_instance_uid.as_str(), key.series_instance_uid.as_str()))
            .or_default()
            .insert(key.sop_instance_uid.as_str());
    }
    groups.into_iter().map(|(series, sops)| (series, sops.into_iter().collect())).collect()
}

/// The IMAGE-level identifier of a study's evidence: every attribute the manifest needs as a
/// return key (PS3.4 C.4.1.1.3.2: universal matching, zero length; sequences with no item).
/// Public so that benchmarks and diagnostics can send the same query with other tools.
pub fn evidence_identifier(study_instance_uid: &str) -> InMemDicomObject {
    let mut identifier = InMemDicomObject::new_empty();
    put(&mut identifier, tags::QUERY_RETRIEVE_LEVEL, PrimitiveValue::from("IMAGE"));
    for &tag in EVIDENCE_TAGS {
        if tag == tags::STUDY_INSTANCE_UID || tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        put_return_key(&mut identifier, tag);
    }
    put(&mut identifier, tags::STUDY_INSTANCE_UID, PrimitiveValue::from(study_instance_uid));
    identifier
}

/// An IMAGE-level identifier (Study Root, PS3.4 C.6.2.1): the study, optionally one series, the
/// SOP Instance UIDs (a list, or universal when empty), and `returns` as return keys.
fn image_identifier(study: &str, series: Option<&str>, sops: &[&str], returns: &[Tag]) -> InMemDicomObject {
    let mut identifier = InMemDicomObject::new_empty();
    put(&mut identifier, tags::QUERY_RETRIEVE_LEVEL, PrimitiveValue::from("IMAGE"));
    put(&mut identifier, tags::STUDY_INSTANCE_UID, PrimitiveValue::from(study));
    if let Some(series) = series {
        put(&mut identifier, tags::SERIES_INSTANCE_UID, PrimitiveValue::from(series));
    }
    let sop_value = if sops.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::Strs(sops.iter().map(|sop| (*sop).to_owned()).collect())
    };
    put(&mut identifier, tags::SOP_INSTANCE_UID, sop_value);
    for &tag in returns {
        if identifier.get(tag).is_none() {
            put_return_key(&mut identifier, tag);
        }
    }
    identifier
}

/// A SERIES-level identifier (Study Root, PS3.4 C.6.2.1): the study and the series, for a C-GET
/// or C-MOVE of the whole series.
fn series_identifier(study: &str, series: &str) -> InMemDicomObject {
    let mut identifier = InMemDicomObject::new_empty();
    put(&mut identifier, tags::QUERY_RETRIEVE_LEVEL, PrimitiveValue::from("SERIES"));
    put(&mut identifier, tags::STUDY_INSTANCE_UID, PrimitiveValue::from(study));
    put(&mut identifier, tags::SERIES_INSTANCE_UID, PrimitiveValue::from(series));
    identifier
}

fn put(identifier: &mut InMemDicomObject, tag: Tag, value: PrimitiveValue) {
    identifier.put(DataElement::new(tag, vr_of(tag), value));
}

/// A return key: empty, or an empty sequence.
fn put_return_key(identifier: &mut InMemDicomObject, tag: Tag) {
    match vr_of(tag) {
        VR::SQ => identifier.put(DataElement::new(tag, VR::SQ, DataSetSequence::<InMemDicomObject>::empty())),
        vr => identifier.put(DataElement::new(tag, vr, PrimitiveValue::Empty)),
    };
}

fn vr_of(tag: Tag) -> VR {
    StandardDataDictionary.by_tag(tag).map_or(VR::UN, |entry| entry.vr.relaxed())
}

/// A sink that also says what it took, for the retrieval loop.
trait Collect: StoreSink {
    /// SOP Instance UIDs taken whole so far.
    fn taken(&self) -> &BTreeSet<String>;
    /// A new attempt at one request begins.
    fn start_attempt(&mut self);
    /// Whether an instance began during this attempt (then it is not retried).
    fn begun(&self) -> bool;
    /// Why this sink refused the instance, if it did.
    fn refusal(&self, sop_instance_uid: &str) -> Option<String>;
}

/// Streams instances into the caller's channel as [`RetrieveEvent`]s.
struct ChannelSink<'a> {
    events: mpsc::Sender<RetrieveEvent>,
    transfer_syntaxes: &'a [String],
    current: Option<String>,
    taken: BTreeSet<String>,
    sent: Vec<String>,
    begun: bool,
    comment: Option<String>,
    refusals: BTreeMap<String, String>,
}

impl<'a> ChannelSink<'a> {
    fn new(events: mpsc::Sender<RetrieveEvent>, transfer_syntaxes: &'a [String]) -> ChannelSink<'a> {
        ChannelSink {
            events,
            transfer_syntaxes,
            current: None,
            taken: BTreeSet::new(),
            sent: Vec::new(),
            begun: false,
            comment: None,
            refusals: BTreeMap::new(),
        }
    }

    fn gone(&mut self) -> Status {
        self.current = None;
        self.comment = Some("the retrieval was cancelled".to_owned());
        Status::OUT_OF_RESOURCES
    }
}

impl StoreSink for ChannelSink<'_> {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        self.begun = true;
        // C-GET: the context's transfer syntax is one we proposed. C-MOVE: our listener chose
        // among the PACS's, so the caller's wish is checked here; nothing is transcoded.
        let transfer_syntax = instance.transfer_syntax_uid.trim_end_matches('\0');
        if !self.transfer_syntaxes.iter().any(|ts| ts == transfer_syntax) {
            let why = format!("sent in transfer syntax {transfer_syntax}, which was not asked for");
            self.refusals.insert(instance.sop_instance_uid.clone(), why.clone());
            self.comment = Some(why);
            return Err(Status::UNABLE_TO_PROCESS);
        }
        let begin = RetrieveEvent::Begin {
            sop_class_uid: instance.sop_class_uid.clone(),
            sop_instance_uid: instance.sop_instance_uid.clone(),
            transfer_syntax_uid: transfer_syntax.to_owned(),
            part10: false,
        };
        if self.events.send(begin).await.is_err() {
            return Err(self.gone());
        }
        self.current = Some(instance.sop_instance_uid.clone());
        Ok(())
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        if self.events.send(RetrieveEvent::Data(fragment)).await.is_err() {
            return Err(self.gone());
        }
        Ok(())
    }

    async fn end(&mut self) -> Status {
        if self.events.send(RetrieveEvent::End).await.is_err() {
            return self.gone();
        }
        if let Some(sop) = self.current.take()
            && self.taken.insert(sop.clone())
        {
            self.sent.push(sop);
        }
        Status::SUCCESS
    }

    async fn abort(&mut self, reason: &NetError) {
        if self.current.take().is_some() {
            let _ = self.events.send(RetrieveEvent::Lost(reason.to_string())).await;
        }
    }

    fn error_comment(&mut self) -> Option<String> {
        self.comment.take()
    }

    fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

impl Collect for ChannelSink<'_> {
    fn taken(&self) -> &BTreeSet<String> {
        &self.taken
    }

    fn start_attempt(&mut self) {
        self.begun = false;
    }

    fn begun(&self) -> bool {
        self.begun
    }

    fn refusal(&self, sop_instance_uid: &str) -> Option<String> {
        self.refusals.get(sop_instance_uid).cloned()
    }
}

/// Keeps each instance's header (up to Pixel Data) and adds it to the evidence.
struct HeaderSink<'a> {
    builder: &'a mut StudyEvidenceBuilder,
    source_ae_title: &'a str,
    collector: Option<(InstanceInfo, HeaderCollector)>,
    taken: BTreeSet<String>,
    begun: bool,
    comment: Option<String>,
    refusals: BTreeMap<String, String>,
}

impl<'a> HeaderSink<'a> {
    fn new(builder: &'a mut StudyEvidenceBuilder, source_ae_title: &'a str) -> HeaderSink<'a> {
        HeaderSink {
            builder,
            source_ae_title,
            collector: None,
            taken: BTreeSet::new(),
            begun: false,
            comment: None,
            refusals: BTreeMap::new(),
        }
    }

    /// Refuses the instance `sop_instance_uid` with `status` because of `why`.
    fn refuse(&mut self, sop_instance_uid: &str, status: Status, why: String) -> Status {
        self.refusals.insert(sop_instance_uid.to_owned(), why.clone());
        self.comment = Some(why);
        self.collector = None;
        status
    }
}

impl StoreSink for HeaderSink<'_> {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        self.begun = true;
        match HeaderCollector::new(&instance.transfer_syntax_uid, hie_dicom_net::header::DEFAULT_MAX_HEADER_BYTES) {
            Ok(collector) => {
                self.collector = Some((instance.clone(), collector));
                Ok(())
            }
            Err(error) => Err(self.refuse(&instance.sop_instance_uid, Status::UNABLE_TO_PROCESS, error.to_string())),
        }
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        let Some((instance, collector)) = self.collector.as_mut() else { return Err(Status::UNABLE_TO_PROCESS) };
        match collector.push(&fragment) {
            Ok(()) => Ok(()),
            Err(error) => {
                let sop_instance_uid = instance.sop_instance_uid.clone();
                Err(self.refuse(&sop_instance_uid, Status::OUT_OF_RESOURCES, error.to_string()))
            }
        }
    }

    async fn end(&mut self) -> Status {
        let Some((instance, collector)) = self.collector.take() else { return Status::UNABLE_TO_PROCESS };
        let prefix = match collector.finish() {
            Ok(prefix) => prefix,
            Err(error) => return self.refuse(&instance.sop_instance_uid, Status::UNABLE_TO_PROCESS, error.to_string()),
        };
        let identity = MetaIdentity {
            sop_class_uid: &instance.sop_class_uid,
            sop_instance_uid: &instance.sop_instance_uid,
            transfer_syntax_uid: &instance.transfer_syntax_uid,
            source_ae_title: self.source_ae_title,
        };
        match self.builder.add_part10(&part10_header(&identity, &prefix)) {
            Ok(_) => {
                self.taken.insert(instance.sop_instance_uid);
                Status::SUCCESS
            }
            Err(error) => self.refuse(&instance.sop_instance_uid, Status::UNABLE_TO_PROCESS, error.to_string()),
        }
    }

    async fn abort(&mut self, _reason: &NetError) {
        self.collector = None;
    }

    fn error_comment(&mut self) -> Option<String> {
        self.comment.take()
    }
}

impl Collect for HeaderSink<'_> {
    fn taken(&self) -> &BTreeSet<String> {
        &self.taken
    }

    fn start_attempt(&mut self) {
        self.begun = false;
    }

    fn begun(&self) -> bool {
        self.begun
    }

    fn refusal(&self, sop_instance_uid: &str) -> Option<String> {
        self.refusals.get(sop_instance_uid).cloned()
    }
}

/// Transfer syntaxes accepted when only the headers are wanted: the uncompressed ones and the
/// common compressed ones (PS3.5 A.4), so that the PACS sends what it stores rather than
/// transcoding pixel data we discard.
const HEADER_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
];
/// C-GET pools kept for distinct transfer syntax lists.
const MAX_GET_POOLS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evidence_identifier_asks_for_every_key_at_image_level() {
        let identifier = evidence_identifier("1.2.3");
        assert_eq!(text(&identifier, tags::QUERY_RETRIEVE_LEVEL).as_deref(), Some("IMAGE"));
        assert_eq!(text(&identifier, tags::STUDY_INSTANCE_UID).as_deref(), Some("1.2.3"));
        for &tag in EVIDENCE_TAGS.iter().filter(|tag| **tag != tags::SPECIFIC_CHARACTER_SET) {
            assert!(identifier.get(tag).is_some(), "{tag}");
        }
        let sequence = identifier.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).unwrap();
        assert_eq!(sequence.vr(), VR::SQ);
        assert!(sequence.items().is_some_and(<[InMemDicomObject]>::is_empty));
    }

    #[test]
    fn retrievals_are_grouped_by_series_with_unique_uid_lists() {
        let key = |series: &str, sop: &str| InstanceKey {
            study_instance_uid: "1.2".to_owned(),
            series_instance_uid: series.to_owned(),
            sop_instance_uid: sop.to_owned(),
        };
        let keys = [key("1.2.1", "1.2.1.2"), key("1.2.2", "1.2.2.1"), key("1.2.1", "1.2.1.1"), key("1.2.1", "1.2.1.2")];
        let groups = by_series(&keys);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&("1.2", "1.2.1")], vec!["1.2.1.1", "1.2.1.2"]);
        let identifier = image_identifier("1.2", Some("1.2.1"), &groups[&("1.2", "1.2.1")], &[]);
        let sops = identifier.get(tags::SOP_INSTANCE_UID).unwrap().to_multi_str().unwrap();
        assert_eq!(sops.len(), 2);
        // The largest list fits a 16-bit UI length even with 64-character UIDs.
        assert!(MAX_UIDS_PER_REQUEST * 65 < usize::from(u16::MAX));
    }
}
