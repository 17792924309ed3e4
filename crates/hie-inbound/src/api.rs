//! The HTTP listener (`[api]`): `/healthz`, `/readyz`, `/metrics`, and the REST API under
//! `/api`. API DTOs live here, so domain and store types stay free of serde.
//!
//! Routes:
//! - `GET /healthz`: 200 once the broker accepts work (every listener bound, writer running).
//! - `GET /readyz`: 200 when the store answers too; 503 otherwise.
//! - `GET /metrics`: Prometheus text.
//! - `GET /api/patients?identifier=<CX>`: the patient holding that identifier, as a JSON array.
//! - `GET /api/outbox?state=pending|failed|done&limit=N`, `POST /api/outbox/{id}/retry`.
//! - `/api/studies...`: studies and manifests ([`studies`]).
//! - `/api/submissions...`: registry submissions ([`submissions`]).

mod studies;
pub mod submissions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hie_broker::commit::AdtStats;
use hie_core::AffinityDomain;
use hie_store::Store;
use hie_store::patients::{IdentifierRow, PatientRecord};
use hie_telemetry::metrics::{Kind, MetricsText};
use serde::{Deserialize, Serialize};

use crate::dicom::DicomStats;
use crate::mllp::MllpStats;

/// What the API handlers read.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub domain: AffinityDomain,
    pub adt_stats: Arc<AdtStats>,
    pub mllp_stats: Arc<MllpStats>,
    /// The DICOM listener's counters (all zero when no listener runs).
    pub dicom_stats: Arc<DicomStats>,
    /// Set by the binary once every listener is bound and the writer runs.
    pub accepting: Arc<AtomicBool>,
    pub version: &'static str,
    /// Wakes the study scheduler after an explicit request; `None` when manifests are off.
    pub study_waker: Option<Arc<tokio::sync::Notify>>,
    /// The retrieval endpoint's counters, when it is served.
    pub retrieval_stats: Option<Arc<crate::xdsi::XdsiStats>>,
    /// Wakes the outbox worker after an operator's retry.
    pub outbox_waker: Option<Arc<tokio::sync::Notify>>,
}

/// The router; the binary serves it on `[api] listen`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/patients", get(patients))
        .route("/api/outbox", get(outbox_list))
        .route("/api/outbox/{id}/retry", post(outbox_retry))
        .merge(studies::routes())
        .merge(submissions::routes())
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct PatientDto {
    identifiers: Vec<String>,
    affinity_domain_id: Option<String>,
    merged_into: Option<String>,
    /// `resolved` (has an affinity-domain ID), `unresolved`, or `merged`.
    status: &'static str,
    family_name: String,
    given_name: String,
    birth_date: String,
    sex: String,
    history: Vec<HistoryDto>,
}

#[derive(Debug, Serialize)]
struct HistoryDto {
    at: String,
    event: String,
    message_control_id: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct ErrorDto {
    error: String,
}

#[derive(Debug, Deserialize)]
struct PatientQuery {
    identifier: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OutboxQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn healthz(State(state): State<ApiState>) -> Response {
    if state.accepting.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if !state.accepting.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn patients(State(state): State<ApiState>, Query(query): Query<PatientQuery>) -> Response {
    let Some(text) = query.identifier.filter(|text| !text.is_empty()) else {
        return bad_request("the identifier query parameter is required, as a CX: id^^^&oid&ISO");
    };
    let cx = match hie_hl7::adt::Cx::parse(&text) {
        Ok(cx) if !cx.id.is_empty() => cx,
        Ok(_) => return bad_request("the identifier has an empty ID (CX-1)"),
        Err(error) => return bad_request(&format!("the identifier is not a CX: {error}")),
    };
    let identifier = hie_broker::from_wire::identifier(&cx);
    let key = state.domain.key(&identifier.authority);
    let record = match state.store.patient_by_identifier(key.as_str(), &identifier.id).await {
        Ok(record) => record,
        Err(error) => return store_unavailable(error),
    };
    let Some(record) = record else {
        return Json(Vec::<PatientDto>::new()).into_response();
    };
    match patient_dto(&state, record, key.as_str()).await {
        Ok(dto) => Json(vec![dto]).into_response(),
        Err(error) => store_unavailable(error),
    }
}

async fn patient_dto(
    state: &ApiState,
    record: PatientRecord,
    queried_authority: &str,
) -> Result<PatientDto, hie_store::StoreError> {
    let affinity_key = state.domain.key(&hie_core::AssigningAuthority {
        universal_id: state.domain.patient_id_authority().to_string(),
        universal_id_type: "ISO".to_owned(),
        ..Default::default()
    });
    let active: Vec<&IdentifierRow> = record.identifiers.iter().filter(|row| row.active).collect();
    let affinity_domain_id = active.iter().find(|row| row.authority_key == affinity_key.as_str()).map(|row| cx(row));
    let merged_into = match record.patient.merged_into {
        // Name the survivor in the authority the caller asked about when it has an ID there.
        Some(survivor_id) => state.store.patient_record(survivor_id).await?.and_then(|survivor| {
            let survivor_active: Vec<&IdentifierRow> = survivor.identifiers.iter().filter(|row| row.active).collect();
            survivor_active
                .iter()
                .find(|row| row.authority_key == queried_authority)
                .or(survivor_active.first())
                .map(|row| cx(row))
        }),
        None => None,
    };
    let status = match (&merged_into, &affinity_domain_id) {
        _ if record.patient.merged_into.is_some() => "merged",
        (_, Some(_)) => "resolved",
        _ => "unresolved",
    };
    let demographics = record.patient.demographics;
    Ok(PatientDto {
        identifiers: active.iter().map(|row| cx(row)).collect(),
        affinity_domain_id,
        merged_into,
        status,
        family_name: demographics.family_name,
        given_name: demographics.given_name,
        birth_date: demographics.birth_date,
        sex: demographics.sex,
        history: record
            .history
            .into_iter()
            .map(|entry| HistoryDto {
                at: hie_core::clock::rfc3339_micros(entry.at),
                event: entry.event,
                message_control_id: entry.message_control_id,
                detail: entry.detail,
            })
            .collect(),
    })
}

async fn outbox_list(State(state): State<ApiState>, Query(query): Query<OutboxQuery>) -> Response {
    let state_filter = query.state.as_deref();
    if state_filter.is_some_and(|wanted| !matches!(wanted, "pending" | "failed" | "done")) {
        return bad_request("state must be pending, failed or done");
    }
    match state.store.outbox_list(state_filter, query.limit.unwrap_or(100).min(1_000)).await {
        Ok(rows) => Json(rows.into_iter().map(OutboxDto::from).collect::<Vec<_>>()).into_response(),
        Err(error) => store_unavailable(error),
    }
}

async fn outbox_retry(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.outbox_retry_failed(id, hie_store::now_micros()).await {
        Ok(true) => (StatusCode::OK, Json(serde_json::json!({ "id": id, "state": "pending" }))).into_response(),
        Ok(false) => {
            (StatusCode::NOT_FOUND, Json(ErrorDto { error: format!("no failed outbox item {id}") })).into_response()
        }
        Err(error) => store_unavailable(error),
    }
}

#[derive(Debug, Serialize)]
struct OutboxDto {
    id: i64,
    topic: String,
    key: String,
    state: String,
    attempts: i64,
    next_attempt_at: String,
    /// Waiting for another item of its key (a submission waiting for its patient's feed).
    parked: bool,
    last_error: Option<String>,
}

impl From<hie_store::outbox::OutboxRow> for OutboxDto {
    fn from(row: hie_store::outbox::OutboxRow) -> OutboxDto {
        OutboxDto {
            id: row.id,
            topic: row.topic,
            key: row.key,
            state: row.state,
            attempts: row.attempts,
            next_attempt_at: hie_core::clock::rfc3339_micros(row.next_attempt_at),
            parked: row.parked,
            last_error: row.last_error,
        }
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let adt = &state.adt_stats;
    let mllp = &state.mllp_stats;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let mut text = MetricsText::new();
    text.family("hie_build_info", "Build information", Kind::Gauge, &[(&[("version", state.version)], 1.0)])
        .family(
            "hie_hl7_messages_total",
            "HL7 messages answered, by outcome",
            Kind::Counter,
            &[
                (&[("outcome", "accepted")], load(&adt.accepted)),
                (&[("outcome", "rejected")], load(&adt.rejected)),
                (&[("outcome", "error")], load(&adt.errors)),
                (&[("outcome", "repeat")], load(&adt.repeats)),
            ],
        )
        .single(
            "hie_hl7_decode_errors_total",
            "HL7 messages that failed to decode",
            Kind::Counter,
            load(&mllp.decode_errors),
        )
        .single("hie_adt_commits_total", "Group commits of ADT batches", Kind::Counter, load(&adt.commits))
        .single(
            "hie_adt_committed_messages_total",
            "ADT messages in committed batches",
            Kind::Counter,
            load(&adt.committed_messages),
        )
        .single(
            "hie_adt_failed_commits_total",
            "ADT batch commits that failed",
            Kind::Counter,
            load(&adt.failed_commits),
        )
        .family(
            "hie_mllp_connections_total",
            "MLLP connections, by fate",
            Kind::Counter,
            &[
                (&[("fate", "accepted")], load(&mllp.connections_accepted)),
                (&[("fate", "refused")], load(&mllp.connections_refused)),
            ],
        )
        .single("hie_mllp_frames_total", "MLLP frames received", Kind::Counter, load(&mllp.frames_received))
        .single(
            "hie_mllp_frames_too_large_total",
            "MLLP frames over the cap",
            Kind::Counter,
            load(&mllp.frames_too_large),
        )
        .single(
            "hie_mllp_idle_timeouts_total",
            "MLLP connections closed for idleness",
            Kind::Counter,
            load(&mllp.idle_timeouts),
        );
    let dicom = &state.dicom_stats;
    text.family(
        "hie_dicom_associations_total",
        "DICOM listener connections, by fate",
        Kind::Counter,
        &[
            (&[("fate", "accepted")], load(&dicom.associations_accepted)),
            (&[("fate", "rejected")], load(&dicom.associations_rejected)),
            (&[("fate", "dropped")], load(&dicom.connections_dropped)),
        ],
    )
    .family(
        "hie_dicom_instances_total",
        "Instances received by the DICOM listener, by outcome",
        Kind::Counter,
        &[
            (&[("outcome", "stored")], load(&dicom.instances_stored)),
            (&[("outcome", "refused")], load(&dicom.instances_refused)),
        ],
    );
    if let Some(retrieval) = &state.retrieval_stats {
        retrieval.render(&mut text);
    }
    // Store-derived gauges: a scrape while the database is down still returns the counters.
    if let Ok((n_patients, n_merged, n_messages)) = state.store.patient_counts().await {
        text.single("hie_patients", "Patients known", Kind::Gauge, n_patients as f64)
            .single("hie_patients_merged", "Patients merged into another", Kind::Gauge, n_merged as f64)
            .single(
                "hie_hl7_messages_recorded",
                "HL7 messages recorded for duplicate detection",
                Kind::Gauge,
                n_messages as f64,
            );
    }
    if let Ok(counts) = state.store.outbox_counts().await {
        text.family(
            "hie_outbox_items",
            "Outbox items by state",
            Kind::Gauge,
            &[
                (&[("state", "pending")], counts.pending as f64),
                (&[("state", "leased")], counts.leased as f64),
                (&[("state", "failed")], counts.failed as f64),
                (&[("state", "done")], counts.done as f64),
            ],
        );
    }
    if let Ok(counts) = state.store.study_counts().await {
        let samples: Vec<([(&str, &str); 1], f64)> =
            counts.iter().map(|(state, n)| ([("state", state.as_str())], *n as f64)).collect();
        let samples: Vec<(&[(&str, &str)], f64)> = samples.iter().map(|(labels, n)| (&labels[..], *n)).collect();
        text.family("hie_studies", "Studies by readiness state", Kind::Gauge, &samples);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text.finish()).into_response()
}

fn cx(row: &IdentifierRow) -> String {
    hie_broker::to_wire::cx_string(row)
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorDto { error: message.to_owned() })).into_response()
}

fn store_unavailable(error: hie_store::StoreError) -> Response {
    tracing::warn!(%error, "API request failed in the store");
    (StatusCode::SERVICE_UNAVAILABLE, Json(ErrorDto { error: "the store is unavailable".to_owned() })).into_response()
}
