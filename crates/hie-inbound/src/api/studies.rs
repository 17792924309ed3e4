//! Studies and their manifests in the REST API.
//!
//! - `GET /api/studies?state=pending|current|failed|gone&limit=N`: studies, latest change first.
//! - `GET /api/studies/{uid}`: one study's readiness and every manifest version.
//! - `GET /api/studies/{uid}/manifest`: the latest manifest (KOS, `application/dicom`).
//! - `GET /api/studies/{uid}/manifests/{version}`: one manifest version.
//! - `POST /api/studies/{uid}/refresh`: an explicit request: the study is (re)built now.
//!
//! Study UIDs are not patient data; the manifest bytes are (patient name and ID), and are served
//! only to whoever can reach the API listener.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hie_store::studies::{ManifestRow, StudyRow};
use serde::{Deserialize, Serialize};

use super::{ApiState, ErrorDto, bad_request, store_unavailable};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/studies", get(list))
        .route("/api/studies/{uid}", get(one))
        .route("/api/studies/{uid}/manifest", get(latest_manifest))
        .route("/api/studies/{uid}/manifests/{version}", get(manifest_version))
        .route("/api/studies/{uid}/refresh", post(refresh))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct StudyDto {
    study_instance_uid: String,
    state: String,
    source: String,
    first_seen_at: String,
    last_change_at: String,
    due_at: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    manifest_version: i64,
    pacs_instances: Option<i64>,
    study_date: Option<String>,
    building: bool,
}

#[derive(Debug, Serialize)]
struct StudyDetailDto {
    #[serde(flatten)]
    study: StudyDto,
    manifests: Vec<ManifestDto>,
}

#[derive(Debug, Serialize)]
struct ManifestDto {
    version: i64,
    sop_instance_uid: String,
    series_instance_uid: String,
    n_series: i64,
    n_instances: i64,
    fingerprint: String,
    created_at: String,
}

impl From<StudyRow> for StudyDto {
    fn from(row: StudyRow) -> StudyDto {
        let now = hie_store::now_micros();
        StudyDto {
            building: row.lease_until.is_some_and(|until| until > now),
            study_instance_uid: row.study_instance_uid,
            state: row.state,
            source: row.source,
            first_seen_at: hie_core::clock::rfc3339_micros(row.first_seen_at),
            last_change_at: hie_core::clock::rfc3339_micros(row.last_change_at),
            due_at: row.due_at.map(hie_core::clock::rfc3339_micros),
            attempts: row.attempts,
            last_error: row.last_error,
            manifest_version: row.manifest_version,
            pacs_instances: row.pacs_instances,
            study_date: row.study_date,
        }
    }
}

impl From<ManifestRow> for ManifestDto {
    fn from(row: ManifestRow) -> ManifestDto {
        ManifestDto {
            version: row.version,
            sop_instance_uid: row.sop_instance_uid,
            series_instance_uid: row.series_instance_uid,
            n_series: row.n_series,
            n_instances: row.n_instances,
            fingerprint: row.fingerprint,
            created_at: hie_core::clock::rfc3339_micros(row.created_at),
        }
    }
}

async fn list(State(state): State<ApiState>, Query(query): Query<ListQuery>) -> Response {
    let wanted = query.state.as_deref();
    if wanted.is_some_and(|wanted| !matches!(wanted, "pending" | "current" | "failed" | "gone")) {
        return bad_request("state must be pending, current, failed or gone");
    }
    match state.store.studies_list(wanted, query.limit.unwrap_or(100).min(1_000)).await {
        Ok(rows) => Json(rows.into_iter().map(StudyDto::from).collect::<Vec<_>>()).into_response(),
        Err(error) => store_unavailable(error),
    }
}

async fn one(State(state): State<ApiState>, Path(uid): Path<String>) -> Response {
    let row = match state.store.study(&uid).await {
        Ok(Some(row)) => row,
        Ok(None) => return unknown_study(&uid),
        Err(error) => return store_unavailable(error),
    };
    match state.store.manifests(&uid).await {
        Ok(manifests) => Json(StudyDetailDto {
            study: StudyDto::from(row),
            manifests: manifests.into_iter().map(ManifestDto::from).collect(),
        })
        .into_response(),
        Err(error) => store_unavailable(error),
    }
}

async fn latest_manifest(State(state): State<ApiState>, Path(uid): Path<String>) -> Response {
    match state.store.latest_manifest(&uid).await {
        Ok(Some((row, kos))) => dicom_file(&row.sop_instance_uid, kos),
        Ok(None) => not_found(format!("no manifest for study {uid}")),
        Err(error) => store_unavailable(error),
    }
}

async fn manifest_version(State(state): State<ApiState>, Path((uid, version)): Path<(String, i64)>) -> Response {
    match state.store.manifest_kos(&uid, version).await {
        Ok(Some(kos)) => dicom_file(&format!("{uid}-v{version}"), kos),
        Ok(None) => not_found(format!("no manifest version {version} for study {uid}")),
        Err(error) => store_unavailable(error),
    }
}

async fn refresh(State(state): State<ApiState>, Path(uid): Path<String>) -> Response {
    if !hie_kos::is_valid_uid(&uid) {
        return bad_request("not a Study Instance UID");
    }
    if let Err(error) = hie_broker::studies::request(&state.store, &uid).await {
        return store_unavailable(error);
    }
    if let Some(waker) = &state.study_waker {
        waker.notify_one();
    }
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "study_instance_uid": uid, "state": "pending" }))).into_response()
}

fn dicom_file(name: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/dicom".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.dcm\"")),
        ],
        bytes,
    )
        .into_response()
}

fn unknown_study(uid: &str) -> Response {
    not_found(format!("no study {uid}"))
}

fn not_found(error: String) -> Response {
    (StatusCode::NOT_FOUND, Json(ErrorDto { error })).into_response()
}
