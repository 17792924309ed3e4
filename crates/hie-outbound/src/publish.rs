//! The publisher: delivers registry submissions (outbox topic `xds.publish`) as the transactions of
//! an XDS-I.b Imaging Document Source, and records every attempt on the submission.
//!
//! A `publish` submission becomes ITI-41 (RAD-68) with the KOS attached, or ITI-42 when the broker
//! is the repository. When the study had an earlier version registered, the new one replaces it:
//! its entryUUID is looked up with ITI-18 (GetDocuments by uniqueId) so the RPLC targets what the
//! registry holds, and a version the registry already deprecated is not replaced but superseded by
//! a new original. A `deprecate` submission becomes ITI-57 (UpdateAvailabilityStatus to
//! Deprecated) of the study's registered document.
//!
//! A previous version registered under another patient than the one this version goes under (the
//! patient was merged into a survivor, and the registry did not move its documents): under the
//! profile's `[patient_merge] published = "registry"` it is replaced by RPLC as usual, and a
//! registry that did not apply the merge refuses that (XDSPatientIdDoesNotMatch), which stops the
//! study, visibly. Under `"republish"` the entry is deprecated first (ITI-57, under its own
//! patient) and this version registered as an original, since a replacement keeps its original's
//! patientId (ITI TF-3 4.2.2.2.2); the submission's note says so. Every attempt records the
//! affinity-domain patient ID it went under.
//!
//! Answers are read through [`hie_broker::publish::classify`]: transient errors are retried with
//! the outbox's backoff; an unknown patient waits for the identity feed; a duplicate uniqueId is
//! checked with ITI-18 (an earlier attempt whose answer was lost may have registered it: then the
//! submission is done, not duplicated), also when the registry reports further errors with it (a
//! resent submission reuses its entryUUIDs, which the registry may refuse too); metadata errors
//! fail the submission for good (visible in `/api/submissions`, retried by hand). Every retry
//! resends the identifiers drawn at enqueue.
//!
//! A submission that fails for good releases its outbox key (its item is done): it stops that
//! study only, and the patient's other studies and identity feed go on. One whose attempts ran out
//! is failed too, but its item stays failed and holds the key: the registry was unreachable, and
//! what waits behind it would fare no better until it is back.

use std::sync::Arc;

use hie_broker::publish::metadata::{self, Carrier, KosFacts, ManifestDocument, PatientIds, SubmissionIds};
use hie_broker::publish::{Mode, PublishConfig, Verdict, classify};
use hie_core::profile::PatientMergePolicy;
use hie_store::outbox::Claimed;
use hie_store::submissions::{Attempt, Ended, PUBLISH_TOPIC, SubmissionRow};
use hie_store::{Store, now_micros};
use hie_xds::ebrim::{Association, DocumentEntry, RegistryObject, SubmissionSet};
use hie_xds::messages::{AdhocQueryRequest, Document, ProvideAndRegisterRequest, ReturnType, SubmitObjectsRequest};
use hie_xds::vocabulary::{
    ASSOCIATION_RPLC, ASSOCIATION_UPDATE_AVAILABILITY_STATUS, PARAM_DOCUMENT_ENTRY_UNIQUE_ID, PARAM_UUID,
    QUERY_GET_ASSOCIATIONS, QUERY_GET_DOCUMENTS, STATUS_APPROVED, STATUS_DEPRECATED,
};
use hie_xds::{RetryClass, messages::Severity};

use crate::deliver::{Deliver, DeliveryError, DeliveryFuture};
use crate::registry::{CallError, Exchange, XdsClient};

/// Where submissions go.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// ITI-42, ITI-18, ITI-57.
    pub registry_url: String,
    /// ITI-41 (mode provide).
    pub repository_url: String,
}

/// Delivers `xds.publish` items.
#[derive(Debug, Clone)]
pub struct XdsPublisher {
    store: Store,
    config: Arc<PublishConfig>,
    endpoints: Endpoints,
    client: XdsClient,
    /// The outbox's attempts per item (`[store] outbox_max_attempts`): the submission is failed
    /// when its last one needs a retry.
    max_attempts: u32,
}

/// What the registry holds for a uniqueId (ITI-18 GetDocuments).
#[derive(Debug, Clone)]
struct Registered {
    entry_uuid: String,
    status: String,
    patient_id: String,
    unique_id: Option<String>,
}

impl XdsPublisher {
    pub fn new(
        store: Store,
        config: Arc<PublishConfig>,
        endpoints: Endpoints,
        client: XdsClient,
        max_attempts: u32,
    ) -> XdsPublisher {
        XdsPublisher { store, config, endpoints, client, max_attempts }
    }

    async fn deliver_item(&self, item: &Claimed) -> Result<(), DeliveryError> {
        let Some(id) = item.payload.strip_prefix("submission=").and_then(|id| id.parse::<i64>().ok()) else {
            return Err(DeliveryError::Permanent(format!("outbox item {}: not a submission payload", item.id)));
        };
        let submission = match self.store.submission(id).await {
            Ok(Some(submission)) => submission,
            Ok(None) => return Err(DeliveryError::Permanent(format!("submission {id} is not in the store"))),
            Err(error) => return Err(DeliveryError::Retryable(format!("store: {error}"))),
        };
        if matches!(submission.state.as_str(), "done" | "superseded") {
            // Finished by an earlier delivery whose outbox outcome was lost (a crash between the two).
            return Ok(());
        }
        // A `failed` submission delivered again is an operator's retry of its outbox item.
        let outcome = match submission.kind.as_str() {
            "deprecate" => self.deprecate(&submission).await,
            _ => self.publish(&submission).await,
        };
        let now = now_micros();
        // The worker fails the item after this attempt if it asks for another.
        let attempts_left = item.attempts < self.max_attempts;
        let stored = match &outcome {
            Outcome::Done { entry_uuid, replaced, note } => {
                let ended = Ended::Done {
                    registry_entry_uuid: entry_uuid.as_deref(),
                    replaced_unique_id: replaced.as_deref(),
                    note: note.as_deref(),
                };
                self.store.submission_finished(id, ended, now).await
            }
            Outcome::Superseded => self.store.submission_finished(id, Ended::Superseded, now).await,
            Outcome::Fatal(_) => self.store.submission_finished(id, Ended::Failed, now).await,
            Outcome::Retry(_) if attempts_left => Ok(()),
            Outcome::Retry(_) => self.store.submission_finished(id, Ended::Failed, now).await,
            // Parked, not failed: it waits as long as the patient is unknown, visibly.
            Outcome::AwaitIdentity(_) => Ok(()),
        };
        stored.map_err(|error| DeliveryError::Retryable(format!("store: {error}")))?;
        match outcome {
            Outcome::Done { .. } | Outcome::Superseded => Ok(()),
            Outcome::Retry(error) => Err(DeliveryError::Retryable(error)),
            Outcome::AwaitIdentity(error) => Err(DeliveryError::Park(error)),
            Outcome::Fatal(error) => {
                // The item is done, so the key goes on: the submission is failed, visible and
                // retried by hand, and nothing else waits for it.
                tracing::warn!(submission = id, %error, "submission failed; the study's later submissions and the patient's other items go on");
                Ok(())
            }
        }
    }

    async fn publish(&self, submission: &SubmissionRow) -> Outcome {
        match self.store.submission_superseded(submission).await {
            Ok(true) => return Outcome::Superseded,
            Ok(false) => {}
            Err(error) => return Outcome::Retry(format!("store: {error}")),
        }
        let (row, kos) = match self.store.manifest(&submission.study_instance_uid, submission.manifest_version).await {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return Outcome::Fatal("the manifest version is not in the store".to_owned()),
            Err(error) => return Outcome::Retry(format!("store: {error}")),
        };
        let facts = match metadata::kos_facts(&kos) {
            Ok(facts) => facts,
            Err(error) => return Outcome::Fatal(error.to_string()),
        };
        let affinity = match self.affinity_id(&facts).await {
            Ok(Some(affinity)) => affinity,
            Ok(None) => {
                return self
                    .await_identity(submission, "waiting for the patient's affinity-domain ID (no ADT linked it yet)")
                    .await;
            }
            Err(error) => return Outcome::Retry(error),
        };
        let source = metadata::source_patient_cx(&facts, self.config.domain.local_authority());
        // What this version replaces: the registry's entry for the study's last registered version.
        let previous = match self.store.last_published(&submission.study_instance_uid).await {
            Ok(previous) => previous.filter(|previous| previous.document_unique_id != submission.document_unique_id),
            Err(error) => return Outcome::Retry(format!("store: {error}")),
        };
        let mut replaces = None;
        // The previous version's entry when the registry holds it deprecated: perhaps by our own
        // earlier attempt's RPLC, whose answer was lost.
        let mut deprecated_previous = None;
        // Set when the previous version is registered under a patient merged away (republish).
        let mut moved_note = None;
        let republish = self.config.profile.patient_merge == PatientMergePolicy::Republish;
        if let Some(previous) = &previous {
            match self.registered(&previous.document_unique_id).await {
                Ok(Some(registered)) if registered.status == STATUS_APPROVED => {
                    if republish && registered.patient_id != affinity {
                        if let Err(outcome) = self.deprecate_moved(submission, &registered).await {
                            return outcome;
                        }
                        moved_note = Some(format!(
                            "the previous version ({}) was registered under another patient: deprecated (ITI-57); \
                             this version registered as an original",
                            previous.document_unique_id
                        ));
                    } else {
                        replaces = Some(registered);
                    }
                }
                // Deprecated or unknown there: nothing to replace; this version goes in as an original.
                Ok(Some(registered)) if registered.status == STATUS_DEPRECATED => {
                    if republish && registered.patient_id != affinity {
                        moved_note = Some(format!(
                            "the previous version ({}), registered under another patient, is deprecated; \
                             this version registered as an original",
                            previous.document_unique_id
                        ));
                    }
                    deprecated_previous = Some(registered);
                }
                Ok(_) => {}
                Err(error) => return self.after_error(submission, error, Exchange::default()).await,
            }
        }
        let submission_time = utc_now_dtm();
        let carrier = Carrier {
            register_only: self.config.mode == Mode::Register,
            repository_unique_id: &self.config.repository_unique_id,
            submission_time: &submission_time,
            replaces: replaces.as_ref().map(|registered| registered.entry_uuid.as_str()),
        };
        let document = ManifestDocument {
            kos: &kos,
            modalities: split_values(&row.modalities),
            body_parts: split_values(&row.body_parts),
        };
        let ids = SubmissionIds {
            document_entry_uuid: &submission.document_entry_uuid,
            submission_set_uuid: &submission.submission_set_uuid,
            submission_set_unique_id: &submission.submission_set_unique_id,
        };
        let patient = PatientIds { affinity: &affinity, source: &source };
        let request = match metadata::submission(&document, &facts, ids, patient, &self.config.profile, carrier) {
            Ok(request) => request,
            Err(error) => {
                let text = format!("metadata: {error}");
                self.record(submission, &Exchange::default(), Some(&text), None).await;
                return Outcome::Fatal(text);
            }
        };
        let (answer, exchange) = match self.config.mode {
            Mode::Provide => {
                let request = ProvideAndRegisterRequest {
                    submission: request,
                    documents: vec![Document {
                        id: submission.document_entry_uuid.clone(),
                        content: kos.clone(),
                        mime_type: "application/dicom".to_owned(),
                    }],
                };
                self.client.provide_and_register(&self.endpoints.repository_url, &request).await
            }
            Mode::Register => self.client.register(&self.endpoints.registry_url, &request).await,
        };
        let replaced =
            previous.as_ref().filter(|_| replaces.is_some()).map(|previous| previous.document_unique_id.clone());
        let sent_under = Some(affinity.as_str());
        let outcome = match answer {
            Err(error) => self.after_error(submission, error, exchange).await,
            Ok(response) => match classify(&response) {
                Verdict::Accepted { warnings } => {
                    self.record_under(submission, &exchange, None, codes(&response).as_deref(), sent_under).await;
                    let note =
                        (!warnings.is_empty()).then(|| format!("accepted with warnings: {}", warnings.join("; ")));
                    Outcome::Done { entry_uuid: Some(submission.document_entry_uuid.clone()), replaced, note }
                }
                Verdict::Verify(text) => {
                    self.record_under(submission, &exchange, Some(&text), codes(&response).as_deref(), sent_under)
                        .await;
                    self.verify(submission, &affinity, replaced, deprecated_previous.as_ref(), &text).await
                }
                Verdict::Retry(text) => {
                    self.record_under(submission, &exchange, Some(&text), codes(&response).as_deref(), sent_under)
                        .await;
                    Outcome::Retry(text)
                }
                Verdict::AwaitIdentity(text) => {
                    self.record_under(submission, &exchange, Some(&text), codes(&response).as_deref(), sent_under)
                        .await;
                    Outcome::AwaitIdentity(text)
                }
                // A resent submission is refused for its uniqueIds and for its entryUUIDs too
                // (they are the ones drawn at enqueue): the duplicate decides, by ITI-18.
                Verdict::Fatal(text) if reports_duplicate(&response) => {
                    self.record_under(submission, &exchange, Some(&text), codes(&response).as_deref(), sent_under)
                        .await;
                    let mut answered: Vec<&str> = response.errors.iter().map(|error| error.code.as_str()).collect();
                    answered.dedup();
                    let answer = format!("{} ({text})", answered.join(", "));
                    self.verify(submission, &affinity, replaced, deprecated_previous.as_ref(), &answer).await
                }
                Verdict::Fatal(text) => {
                    self.record_under(submission, &exchange, Some(&text), codes(&response).as_deref(), sent_under)
                        .await;
                    Outcome::Fatal(text)
                }
            },
        };
        match (outcome, moved_note) {
            (Outcome::Done { entry_uuid, replaced, note }, Some(moved)) => {
                let note = Some(match note {
                    Some(note) => format!("{moved}; {note}"),
                    None => moved,
                });
                Outcome::Done { entry_uuid, replaced, note }
            }
            (outcome, _) => outcome,
        }
    }

    /// Deprecates (ITI-57) a previous version's entry registered under another patient than the
    /// one this submission goes under. `Err` is how the submission's delivery ends instead.
    async fn deprecate_moved(&self, submission: &SubmissionRow, registered: &Registered) -> Result<(), Outcome> {
        // Identifiers of its own: the submission's are the registration's. Drawn per attempt; a
        // retry after a lost answer finds the entry deprecated and does not send this again.
        let submission_set_uuid = hie_broker::publish::urn_uuid();
        let submission_set_unique_id = hie_broker::publish::uuid_oid();
        let request = self.status_change(&submission_set_uuid, &submission_set_unique_id, registered);
        let (answer, exchange) = self.client.update(&self.endpoints.registry_url, &request).await;
        let response = match answer {
            Ok(response) => response,
            Err(error) => return Err(self.after_error(submission, error, exchange).await),
        };
        let failed = |text: &str| format!("deprecating the previous version under another patient (ITI-57): {text}");
        match classify(&response) {
            Verdict::Accepted { .. } => Ok(()),
            Verdict::Retry(text) => {
                let text = failed(&text);
                self.record(submission, &exchange, Some(&text), codes(&response).as_deref()).await;
                Err(Outcome::Retry(text))
            }
            Verdict::AwaitIdentity(text) => {
                let text = failed(&text);
                self.record(submission, &exchange, Some(&text), codes(&response).as_deref()).await;
                Err(Outcome::AwaitIdentity(text))
            }
            Verdict::Verify(text) | Verdict::Fatal(text) => {
                let text = failed(&text);
                self.record(submission, &exchange, Some(&text), codes(&response).as_deref()).await;
                Err(Outcome::Fatal(text))
            }
        }
    }

    /// ITI-57: an UpdateAvailabilityStatus of `registered` from Approved to Deprecated, in a
    /// SubmissionSet with these identifiers, under the entry's own patient.
    fn status_change(
        &self,
        submission_set_uuid: &str,
        submission_set_unique_id: &str,
        registered: &Registered,
    ) -> SubmitObjectsRequest {
        let submission_set = SubmissionSet {
            id: submission_set_uuid.to_owned(),
            title: vec![hie_xds::ebrim::Localized::new("Imaging manifest deprecated")],
            submission_time: Some(utc_now_dtm()),
            content_type_code: self
                .config
                .profile
                .codes
                .resolve(
                    hie_core::profile::CodedAttribute::ContentTypeCode,
                    &self.config.profile.content_type_code,
                    &self.config.profile.content_type_code.code,
                )
                .map(|code| hie_xds::ebrim::Code::new(&code.code, &code.scheme, &code.display)),
            patient_id: Some(registered.patient_id.clone()),
            source_id: Some(self.config.profile.source_id.to_string()),
            unique_id: Some(submission_set_unique_id.to_owned()),
            ..SubmissionSet::default()
        };
        let status_change = Association {
            id: hie_broker::publish::urn_uuid(),
            association_type: ASSOCIATION_UPDATE_AVAILABILITY_STATUS.to_owned(),
            source_object: submission_set_uuid.to_owned(),
            target_object: registered.entry_uuid.clone(),
            original_status: Some(STATUS_APPROVED.to_owned()),
            new_status: Some(STATUS_DEPRECATED.to_owned()),
            ..Association::default()
        };
        SubmitObjectsRequest {
            request_slots: Vec::new(),
            objects: vec![RegistryObject::SubmissionSet(submission_set), RegistryObject::Association(status_change)],
        }
    }

    /// A duplicate uniqueId after a possibly lost answer: done if the registry holds our document
    /// for our patient (the earlier attempt committed), a failure otherwise.
    ///
    /// `deprecated_previous`: the study's previous version, deprecated in the registry before this
    /// attempt; if the registered document replaces it (RPLC), an earlier attempt did, and that is
    /// what this submission replaced.
    async fn verify(
        &self,
        submission: &SubmissionRow,
        affinity: &str,
        replaced: Option<String>,
        deprecated_previous: Option<&Registered>,
        answer: &str,
    ) -> Outcome {
        match self.registered(&submission.document_unique_id).await {
            Ok(Some(registered)) if registered.patient_id == affinity => {
                let mut replaced = replaced;
                if let (None, Some(previous)) = (&replaced, deprecated_previous)
                    && self.replaces(&registered.entry_uuid, &previous.entry_uuid).await
                {
                    replaced = previous.unique_id.clone();
                }
                Outcome::Done {
                    entry_uuid: Some(registered.entry_uuid),
                    replaced,
                    note: Some(format!(
                        "the registry answered {answer}; ITI-18 shows the document registered for this patient"
                    )),
                }
            }
            Ok(Some(registered)) => Outcome::Fatal(format!(
                "{answer}; the registry holds this uniqueId for another patient ({})",
                registered.patient_id
            )),
            Ok(None) => Outcome::Fatal(format!("{answer}; ITI-18 finds no such document")),
            Err(error) if error.is_retryable() => Outcome::Retry(format!("verifying by ITI-18: {error}")),
            Err(error) => Outcome::Fatal(format!("verifying by ITI-18: {error}")),
        }
    }

    async fn deprecate(&self, submission: &SubmissionRow) -> Outcome {
        let previous = match self.store.last_published(&submission.study_instance_uid).await {
            Ok(previous) => previous,
            Err(error) => return Outcome::Retry(format!("store: {error}")),
        };
        let Some(previous) = previous else {
            return Outcome::Done { entry_uuid: None, replaced: None, note: Some("nothing was registered".to_owned()) };
        };
        let registered = match self.registered(&previous.document_unique_id).await {
            Ok(Some(registered)) => registered,
            Ok(None) => {
                return Outcome::Done {
                    entry_uuid: None,
                    replaced: None,
                    note: Some("the registry holds no such document".to_owned()),
                };
            }
            Err(error) => return self.after_error(submission, error, Exchange::default()).await,
        };
        if registered.status == STATUS_DEPRECATED {
            return Outcome::Done {
                entry_uuid: Some(registered.entry_uuid),
                replaced: None,
                note: Some("already deprecated".to_owned()),
            };
        }
        let request =
            self.status_change(&submission.submission_set_uuid, &submission.submission_set_unique_id, &registered);
        let (answer, exchange) = self.client.update(&self.endpoints.registry_url, &request).await;
        match answer {
            Err(error) => self.after_error(submission, error, exchange).await,
            Ok(response) => {
                let verdict = classify(&response);
                let error = match &verdict {
                    Verdict::Accepted { .. } => None,
                    Verdict::Retry(text)
                    | Verdict::AwaitIdentity(text)
                    | Verdict::Verify(text)
                    | Verdict::Fatal(text) => Some(text.clone()),
                };
                self.record(submission, &exchange, error.as_deref(), codes(&response).as_deref()).await;
                match verdict {
                    Verdict::Accepted { .. } => Outcome::Done {
                        entry_uuid: Some(registered.entry_uuid),
                        replaced: None,
                        note: Some(format!("deprecated {}", previous.document_unique_id)),
                    },
                    Verdict::Retry(text) => Outcome::Retry(text),
                    Verdict::AwaitIdentity(text) => Outcome::AwaitIdentity(text),
                    Verdict::Verify(text) | Verdict::Fatal(text) => Outcome::Fatal(text),
                }
            }
        }
    }

    /// Whether the registry holds an RPLC from `source` to `target` (ITI-18 GetAssociations);
    /// `false` when it can't be told.
    async fn replaces(&self, source: &str, target: &str) -> bool {
        let request = AdhocQueryRequest {
            query_id: QUERY_GET_ASSOCIATIONS.to_owned(),
            home: self.config.profile.home_community_id.clone(),
            return_type: ReturnType::LeafClass,
            return_composed_objects: true,
            parameters: vec![hie_xds::ebrim::Slot {
                name: PARAM_UUID.to_owned(),
                slot_type: None,
                values: vec![hie_xds::messages::quote_query_list(&[source])],
            }],
        };
        let (answer, _) = self.client.query(&self.endpoints.registry_url, &request).await;
        answer.is_ok_and(|response| {
            response.objects.iter().any(|object| {
                matches!(object, RegistryObject::Association(association)
                    if association.association_type == ASSOCIATION_RPLC
                        && association.source_object == source
                        && association.target_object == target)
            })
        })
    }

    /// ITI-18 GetDocuments by uniqueId.
    async fn registered(&self, unique_id: &str) -> Result<Option<Registered>, CallError> {
        let request = AdhocQueryRequest {
            query_id: QUERY_GET_DOCUMENTS.to_owned(),
            home: self.config.profile.home_community_id.clone(),
            return_type: ReturnType::LeafClass,
            return_composed_objects: true,
            parameters: vec![hie_xds::ebrim::Slot {
                name: PARAM_DOCUMENT_ENTRY_UNIQUE_ID.to_owned(),
                slot_type: None,
                values: vec![hie_xds::messages::quote_query_list(&[unique_id])],
            }],
        };
        let (answer, _) = self.client.query(&self.endpoints.registry_url, &request).await;
        let response = answer?;
        if let Verdict::Retry(text) | Verdict::Fatal(text) | Verdict::AwaitIdentity(text) | Verdict::Verify(text) =
            classify(&response.response)
        {
            return Err(CallError::BadAnswer(format!("ITI-18: {text}")));
        }
        Ok(response.objects.into_iter().find_map(|object| match object {
            RegistryObject::DocumentEntry(DocumentEntry { id, status, patient_id, unique_id: Some(found), .. })
                if found == unique_id =>
            {
                Some(Registered {
                    entry_uuid: id,
                    status: status.unwrap_or_default(),
                    patient_id: patient_id.unwrap_or_default(),
                    unique_id: Some(found),
                })
            }
            _ => None,
        }))
    }

    /// The patient's affinity-domain CX, from the identity store (a merged patient's survivor's);
    /// `None` when not linked (yet).
    async fn affinity_id(&self, facts: &KosFacts) -> Result<Option<String>, String> {
        hie_broker::publish::affinity_patient_id(&self.store, &self.config.domain, facts)
            .await
            .map_err(|error| format!("store: {error}"))
    }

    async fn after_error(&self, submission: &SubmissionRow, error: CallError, exchange: Exchange) -> Outcome {
        let text = error.to_string();
        self.record(submission, &exchange, Some(&text), None).await;
        if error.is_retryable() { Outcome::Retry(text) } else { Outcome::Fatal(text) }
    }

    /// Parks the submission until its patient is known: an ADT may come hours after the images.
    async fn await_identity(&self, submission: &SubmissionRow, why: &str) -> Outcome {
        self.record(submission, &Exchange::default(), Some(why), None).await;
        Outcome::AwaitIdentity(why.to_owned())
    }

    async fn record(&self, submission: &SubmissionRow, exchange: &Exchange, error: Option<&str>, codes: Option<&str>) {
        self.record_under(submission, exchange, error, codes, None).await;
    }

    /// Records an attempt whose request went under `affinity` (the registry's patient).
    async fn record_under(
        &self,
        submission: &SubmissionRow,
        exchange: &Exchange,
        error: Option<&str>,
        codes: Option<&str>,
        affinity: Option<&str>,
    ) {
        let attempt = Attempt {
            request: (!exchange.request.is_empty()).then_some(exchange.request.as_str()),
            response: exchange.response.as_deref(),
            error,
            error_codes: codes,
            affinity_patient_id: affinity,
        };
        if let Err(store_error) = self.store.submission_attempted(submission.id, &attempt, now_micros()).await {
            tracing::warn!(submission = submission.id, error = %store_error, "could not record a submission attempt");
        }
    }
}

impl Deliver for XdsPublisher {
    fn topic(&self) -> &'static str {
        PUBLISH_TOPIC
    }

    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a> {
        Box::pin(self.deliver_item(item))
    }
}

/// How one delivery ends for the submission.
#[derive(Debug)]
enum Outcome {
    Done {
        entry_uuid: Option<String>,
        replaced: Option<String>,
        note: Option<String>,
    },
    Superseded,
    Retry(String),
    /// The patient is not known yet: not linked to the affinity domain by an ADT, or unknown to
    /// the registry (XDSUnknownPatientId). Parked: it waits for the ADT or the feed.
    AwaitIdentity(String),
    Fatal(String),
}

/// Whether the answer refuses a uniqueId as already registered (an error, not a warning).
fn reports_duplicate(response: &hie_xds::messages::RegistryResponse) -> bool {
    response
        .errors
        .iter()
        .any(|error| error.severity != Severity::Warning && error.code.retry_class() == RetryClass::VerifyByQuery)
}

fn codes(response: &hie_xds::messages::RegistryResponse) -> Option<String> {
    let codes: Vec<&str> = response.errors.iter().map(|error| error.code.as_str()).collect();
    (!codes.is_empty()).then(|| codes.join(" "))
}

fn split_values(text: &str) -> Vec<String> {
    text.split('\\').map(str::trim).filter(|value| !value.is_empty()).map(str::to_owned).collect()
}

fn utc_now_dtm() -> String {
    hie_core::clock::hl7_timestamp(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
    )
}
