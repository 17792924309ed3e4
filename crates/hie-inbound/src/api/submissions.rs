//! Registry submissions in the REST API.
//!
//! - `GET /api/submissions?study=UID` (or `?state=queued|done|failed|superseded&limit=N`): each
//!   submission's kind, state, attempts, last error with its XDS codes, and the exact last request
//!   and response.
//! - `POST /api/submissions/{id}/retry`: puts a failed submission back in the queue.
//!
//! PHI: the request and response carry the patient's identifiers and demographics. They are
//! shown with those values masked (sourcePatientInfo, sourcePatientId, patientId, the query's
//! patient parameter) unless the caller asks for `phi=true`; the API listener should only be
//! reachable by operators either way.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hie_store::submissions::SubmissionRow;
use serde::{Deserialize, Serialize};

use super::{ApiState, ErrorDto, bad_request, store_unavailable};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/api/submissions", get(list)).route("/api/submissions/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    study: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    /// `true`: show the exchange unmasked.
    phi: Option<bool>,
}

#[derive(Debug, Serialize)]
struct SubmissionDto {
    id: i64,
    study_instance_uid: String,
    manifest_version: i64,
    kind: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    error_codes: Vec<String>,
    document_unique_id: String,
    document_entry_uuid: String,
    submission_set_unique_id: String,
    registry_entry_uuid: Option<String>,
    replaced_unique_id: Option<String>,
    note: Option<String>,
    request: Option<String>,
    response: Option<String>,
    created_at: String,
    updated_at: String,
}

fn dto(row: SubmissionRow, phi: bool) -> SubmissionDto {
    let show = |text: Option<String>| text.map(|text| if phi { text } else { mask_phi(&text) });
    SubmissionDto {
        id: row.id,
        study_instance_uid: row.study_instance_uid,
        manifest_version: row.manifest_version,
        kind: row.kind,
        state: row.state,
        attempts: row.attempts,
        last_error: row.last_error,
        error_codes: row.error_codes.map(|codes| codes.split(' ').map(str::to_owned).collect()).unwrap_or_default(),
        document_unique_id: row.document_unique_id,
        document_entry_uuid: row.document_entry_uuid,
        submission_set_unique_id: row.submission_set_unique_id,
        registry_entry_uuid: row.registry_entry_uuid,
        replaced_unique_id: row.replaced_unique_id,
        note: row.note,
        request: show(row.request),
        response: show(row.response),
        created_at: hie_core::clock::rfc3339_micros(row.created_at),
        updated_at: hie_core::clock::rfc3339_micros(row.updated_at),
    }
}

async fn list(State(state): State<ApiState>, Query(query): Query<ListQuery>) -> Response {
    let phi = query.phi.unwrap_or(false);
    let rows = match (&query.study, query.state.as_deref()) {
        (Some(study), _) => state.store.submissions_of(study).await,
        (None, wanted) => {
            if wanted.is_some_and(|wanted| !matches!(wanted, "queued" | "done" | "failed" | "superseded")) {
                return bad_request("state must be queued, done, failed or superseded");
            }
            state.store.submissions_recent(wanted, query.limit.unwrap_or(100).min(1_000)).await
        }
    };
    match rows {
        Ok(rows) => Json(rows.into_iter().map(|row| dto(row, phi)).collect::<Vec<_>>()).into_response(),
        Err(error) => store_unavailable(error),
    }
}

async fn retry(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.submission_requeue(id, hie_store::now_micros()).await {
        Ok(true) => {
            if let Some(waker) = &state.outbox_waker {
                waker.notify_one();
            }
            (StatusCode::OK, Json(serde_json::json!({ "id": id, "state": "queued" }))).into_response()
        }
        Ok(false) => {
            (StatusCode::NOT_FOUND, Json(ErrorDto { error: format!("no failed submission {id}") })).into_response()
        }
        Err(error) => store_unavailable(error),
    }
}

/// Masks the patient's identifiers and demographics in an XDS exchange: the values of the
/// sourcePatientInfo, sourcePatientId and patient-ID query slots, and the value attribute of
/// patientId external identifiers. What remains shows the structure and every other value.
pub fn mask_phi(xml: &str) -> String {
    const MASK: &str = "***";
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    // Slots whose values are patient data: every <Value> until the slot closes.
    const SLOTS: [&str; 4] = [
        "name=\"sourcePatientInfo\"",
        "name=\"sourcePatientId\"",
        "name=\"$XDSDocumentEntryPatientId\"",
        "name=\"$XDSSubmissionSetPatientId\"",
    ];
    while let Some((position, slot)) = SLOTS.iter().filter_map(|slot| rest.find(slot).map(|at| (at, *slot))).min() {
        let (before, after) = rest.split_at(position + slot.len());
        out.push_str(before);
        let end = after.find("Slot>").map_or(after.len(), |at| at + "Slot>".len());
        let (inside, tail) = after.split_at(end);
        out.push_str(&mask_values(inside, slot.contains("sourcePatientInfo"), MASK));
        rest = tail;
    }
    out.push_str(rest);
    mask_patient_id_attributes(&out, MASK)
}

/// Replaces the text of every `Value` element in `slot`; sourcePatientInfo keeps its `PID-n|`.
fn mask_values(slot: &str, keep_field_name: bool, mask: &str) -> String {
    let mut out = String::with_capacity(slot.len());
    let mut rest = slot;
    while let Some(open) = rest.find("Value>") {
        let (before, after) = rest.split_at(open + "Value>".len());
        out.push_str(before);
        let Some(close) = after.find('<') else {
            rest = after;
            break;
        };
        let value = &after[..close];
        if keep_field_name && let Some((field, _)) = value.split_once('|') {
            out.push_str(field);
            out.push('|');
        }
        if !value.is_empty() {
            out.push_str(mask);
        }
        rest = &after[close..];
    }
    out.push_str(rest);
    out
}

/// `value="..."` of the ExternalIdentifiers whose scheme is a patientId scheme.
fn mask_patient_id_attributes(xml: &str, mask: &str) -> String {
    const SCHEMES: [&str; 2] = [
        "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", // DocumentEntry.patientId
        "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", // SubmissionSet.patientId
    ];
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("ExternalIdentifier ") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let end = after.find('>').map_or(after.len(), |at| at + 1);
        let (tag, tail) = after.split_at(end);
        if SCHEMES.iter().any(|scheme| tag.contains(scheme))
            && let Some(value_at) = tag.find("value=\"")
        {
            let value_start = value_at + "value=\"".len();
            let value_end = tag[value_start..].find('"').map_or(tag.len(), |at| value_start + at);
            out.push_str(&tag[..value_start]);
            out.push_str(mask);
            out.push_str(&tag[value_end..]);
        } else {
            out.push_str(tag);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_values_are_masked_and_the_rest_kept() {
        let xml = r#"<rim:Slot name="sourcePatientInfo"><rim:ValueList><rim:Value>PID-3|MRN1^^^HOSP</rim:Value><rim:Value>PID-5|Doe^Jane</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="sourcePatientId"><rim:ValueList><rim:Value>MRN1^^^HOSP</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="languageCode"><rim:ValueList><rim:Value>en-US</rim:Value></rim:ValueList></rim:Slot><rim:ExternalIdentifier id="e1" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" registryObject="d" value="AD1^^^&amp;1.2.3&amp;ISO"><rim:Name/></rim:ExternalIdentifier><rim:ExternalIdentifier id="e2" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" registryObject="d" value="1.2.3.4"/>"#;
        let masked = mask_phi(xml);
        for secret in ["MRN1", "Doe", "Jane", "AD1"] {
            assert!(!masked.contains(secret), "{secret} left in {masked}");
        }
        for kept in ["PID-3|***", "PID-5|***", "en-US", "value=\"1.2.3.4\"", "value=\"***\""] {
            assert!(masked.contains(kept), "{kept} missing from {masked}");
        }
    }
}
