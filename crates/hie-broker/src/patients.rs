//! Patient identity from ADT: which patient a message addresses, what changes, and which
//! changes are refused.
//!
//! Rules (HL7 v2 chapter 3, IHE ITI-8/ITI-30, and the merge pitfalls other systems hit):
//! - PID-3 repetitions are kept with their assigning authorities; an identifier with no authority
//!   is the hospital's MRN; one in the affinity domain's authority is the patient's
//!   affinity-domain ID. A patient has at most one active identifier in each of those two.
//! - A merge (A40) links the prior patient (MRG-1) to the survivor (PID-3); both rows and their
//!   history stay. Refused: MRG-1 equal to PID-3, both naming one patient, a merge that would
//!   make a cycle, merging into or out of a patient already merged elsewhere. A repeated merge
//!   and an inverse duplicate (PID and MRG swapped after the merge was applied) are accepted and
//!   change nothing.
//! - A change of identifier (A47) retires MRG-1 and gives the patient PID-3.
//! - Updates to a patient that was merged away are refused: its record is closed.

use hie_core::{AffinityDomain, PatientIdentifier};
use hie_hl7::adt::{AdtKind, AdtMessage, ErrorCode, Hl7Error, Location, PatientGroup};
use hie_store::patients::{self, Demographics, IdentifierRow, PatientRow};
use hie_store::{StoreError, Tx, outbox};

use crate::from_wire;

/// The outbox topic of identity feeds to the registry (ITI-8).
pub const IDENTITY_FEED_TOPIC: &str = "iti8";

/// Most identifiers one PID-3 or MRG-1 may carry.
pub const MAX_IDENTIFIERS: usize = 64;

/// What applying a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Store ids of the patients the message changed (empty for a no-op repeat).
    pub changed_patients: Vec<i64>,
    /// Whether outbox items were written (the outbox worker should be woken).
    pub enqueued: bool,
}

/// Why a message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The message is wrong for the current state: answer AR with this error; do not retry.
    #[error("rejected: {0:?}")]
    Rejected(Hl7Error),
    /// The store failed; answer AE so the sender tries again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies one ADT message inside `tx`. The caller commits (or rolls back) and answers.
pub async fn apply_adt(
    tx: &mut Tx<'_>,
    domain: &AffinityDomain,
    message: &AdtMessage,
    now: i64,
) -> Result<Applied, ApplyError> {
    let control_id = message.header.control_id.as_str();
    // Variants are named after the trigger events (A01…A47).
    let event = format!("{:?}", message.event);
    let mut applied = Applied { changed_patients: Vec::new(), enqueued: false };
    match message.event.kind() {
        AdtKind::Demographics => {
            // Only the first PID group matters for these events (HL7 v2 3.3).
            if let Some(group) = message.groups.first() {
                apply_demographics(tx, domain, group, &event, control_id, now, &mut applied).await?;
            }
        }
        AdtKind::Merge => {
            for group in &message.groups {
                apply_merge(tx, domain, group, &event, control_id, now, &mut applied).await?;
            }
        }
        AdtKind::ChangeIdentifier => {
            for group in &message.groups {
                apply_change_identifier(tx, domain, group, &event, control_id, now, &mut applied).await?;
            }
        }
    }
    Ok(applied)
}

/// An identifier normalized for storage: the canonical authority key plus what the message said.
#[derive(Debug, Clone)]
struct Keyed {
    key: String,
    identifier: PatientIdentifier,
    in_affinity_domain: bool,
    local: bool,
}

async fn apply_demographics(
    tx: &mut Tx<'_>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    now: i64,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let pid_location = || location("PID", group.pid_index, 3, 0);
    let identifiers = keyed_identifiers(domain, &group.pid.identifiers, pid_location)?;
    check_single_valued(&identifiers, pid_location)?;
    let demographics = from_wire::demographics(&group.pid);
    let (patient, existing) = match resolve(tx, &identifiers, pid_location).await? {
        Some((patient, existing)) => {
            refuse_if_merged(&patient, pid_location())?;
            check_no_conflicting_link(&existing, &identifiers, pid_location)?;
            patients::update_demographics(tx, patient.id, &demographics, now).await?;
            (patient.id, existing)
        }
        None => (patients::create_patient(tx, &demographics, now).await?, Vec::new()),
    };
    let added = attach_all(tx, patient, &identifiers, &existing).await?;
    let detail =
        if added.is_empty() { "demographics".to_owned() } else { format!("identifiers added: {}", added.join(" ")) };
    patients::add_history(tx, patient, event, control_id, &detail, now).await?;
    applied.changed_patients.push(patient);
    feed_identity(tx, patient, None, linked(domain, &existing, &identifiers), event, now, applied).await
}

async fn apply_merge(
    tx: &mut Tx<'_>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    now: i64,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let (pid_location, mrg_location) = pid_and_mrg_locations(group);
    let (survivor_ids, prior_ids) = pid_and_mrg_identifiers(domain, group)?;
    if prior_ids.iter().any(|prior| survivor_ids.iter().any(|survivor| same_identifier(survivor, prior))) {
        return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 names the same identifier as PID-3"));
    }

    // Every check reads before anything is written, so a refusal leaves no trace and needs no
    // savepoint (the writer relies on this).
    let survivor = resolve(tx, &survivor_ids, pid_location).await?;
    let prior = resolve(tx, &prior_ids, mrg_location).await?;
    if let (Some((survivor, _)), Some((prior, _))) = (&survivor, &prior) {
        if prior.id == survivor.id {
            return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 and PID-3 name the same patient"));
        }
        if prior.merged_into == Some(survivor.id) || survivor.merged_into == Some(prior.id) {
            // A repeat, or an inverse duplicate of a merge already applied: nothing to change,
            // and refusing would only make the sender retry forever.
            patients::add_history(tx, survivor.id, event, control_id, "duplicate merge ignored", now).await?;
            return Ok(());
        }
        if merge_chain(tx, survivor.id).await?.contains(&prior.id) {
            return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "the merge would make a cycle"));
        }
    }
    if let Some(other) = survivor.as_ref().and_then(|(survivor, _)| survivor.merged_into) {
        let message = format!("the surviving patient was merged into {}", describe(tx, other).await?);
        return Err(rejected(pid_location(), ErrorCode::RecordLocked, &message));
    }
    if let Some(other) = prior.as_ref().and_then(|(prior, _)| prior.merged_into) {
        let message = format!("the prior patient was already merged into {}", describe(tx, other).await?);
        return Err(rejected(mrg_location(), ErrorCode::RecordLocked, &message));
    }
    let survivor_existing = survivor.as_ref().map(|(_, identifiers)| identifiers.clone()).unwrap_or_default();
    check_no_conflicting_link(&survivor_existing, &survivor_ids, pid_location)?;

    let demographics = from_wire::demographics(&group.pid);
    let survivor_id = match &survivor {
        Some((survivor, _)) => {
            patients::update_demographics(tx, survivor.id, &demographics, now).await?;
            survivor.id
        }
        None => {
            let id = patients::create_patient(tx, &demographics, now).await?;
            patients::add_history(tx, id, event, control_id, "created as merge survivor", now).await?;
            id
        }
    };
    attach_all(tx, survivor_id, &survivor_ids, &survivor_existing).await?;
    let prior_id = match &prior {
        Some((prior, _)) => prior.id,
        None => {
            // A40 before the prior patient was ever announced: keep the prior identifiers, merged,
            // so a late message under them is recognized and refused.
            let id = patients::create_patient(tx, &Demographics::default(), now).await?;
            attach_all(tx, id, &prior_ids, &[]).await?;
            patients::add_history(tx, id, event, control_id, "created as merge prior (not known before)", now).await?;
            id
        }
    };
    patients::set_merged_into(tx, prior_id, survivor_id, now).await?;
    let prior_name = describe(tx, prior_id).await?;
    let survivor_name = describe(tx, survivor_id).await?;
    patients::add_history(tx, prior_id, event, control_id, &format!("merged into {survivor_name}"), now).await?;
    patients::add_history(tx, survivor_id, event, control_id, &format!("absorbed {prior_name}"), now).await?;
    applied.changed_patients.extend([prior_id, survivor_id]);
    let linked = linked(domain, &survivor_existing, &survivor_ids);
    feed_identity(tx, survivor_id, Some(prior_id), linked, event, now, applied).await
}

async fn apply_change_identifier(
    tx: &mut Tx<'_>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    now: i64,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let (pid_location, mrg_location) = pid_and_mrg_locations(group);
    let (new_ids, old_ids) = pid_and_mrg_identifiers(domain, group)?;
    if old_ids.iter().all(|old| new_ids.iter().any(|new| same_identifier(new, old))) {
        return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 names the same identifier as PID-3"));
    }

    // Reads and checks first: a refusal writes nothing.
    let holder = resolve(tx, &new_ids, pid_location).await?;
    let Some((patient, existing)) = resolve(tx, &old_ids, mrg_location).await? else {
        // A repeat after the change was applied: the old identifier is retired and the new one
        // is active on the same patient.
        if let Some((holder, _)) = &holder
            && retired_on(tx, &old_ids, holder.id).await?
        {
            return Ok(());
        }
        return Err(rejected(mrg_location(), ErrorCode::UnknownKey, "no patient holds the MRG-1 identifier"));
    };
    refuse_if_merged(&patient, mrg_location())?;
    if holder.as_ref().is_some_and(|(holder, _)| holder.id != patient.id) {
        return Err(rejected(
            pid_location(),
            ErrorCode::DuplicateKey,
            "the new identifier belongs to another patient; send a merge (A40) instead",
        ));
    }
    let retiring: Vec<&Keyed> =
        old_ids.iter().filter(|old| !new_ids.iter().any(|new| same_identifier(new, old))).collect();
    let remaining: Vec<IdentifierRow> = existing
        .iter()
        .filter(|row| !retiring.iter().any(|old| row.authority_key == old.key && row.id_value == old.identifier.id))
        .cloned()
        .collect();
    check_no_conflicting_link(&remaining, &new_ids, pid_location)?;

    for old in &retiring {
        patients::retire_identifier(tx, &old.key, &old.identifier.id).await?;
    }
    patients::update_demographics(tx, patient.id, &from_wire::demographics(&group.pid), now).await?;
    let added = attach_all(tx, patient.id, &new_ids, &remaining).await?;
    let retired: Vec<&str> = retiring.iter().map(|old| old.identifier.id.as_str()).collect();
    let detail = format!("identifier changed: retired {} added {}", retired.join(" "), added.join(" "));
    patients::add_history(tx, patient.id, event, control_id, &detail, now).await?;
    applied.changed_patients.push(patient.id);
    feed_identity(tx, patient.id, None, linked(domain, &remaining, &new_ids), event, now, applied).await
}

/// Where PID-3 and MRG-1 of a group are, for ERR-2. Each PID of a merge is followed by its MRG,
/// so they share an occurrence number.
fn pid_and_mrg_locations(group: &PatientGroup) -> (impl Fn() -> Location + Copy, impl Fn() -> Location + Copy) {
    let sequence = group.pid_index;
    (move || location("PID", sequence, 3, 0), move || location("MRG", sequence, 1, 1))
}

/// PID-3 and MRG-1 of a merge or identifier change, normalized: MRG-1 must name someone, and
/// PID-3 may hold one identifier per single-valued authority.
fn pid_and_mrg_identifiers(
    domain: &AffinityDomain,
    group: &PatientGroup,
) -> Result<(Vec<Keyed>, Vec<Keyed>), ApplyError> {
    let (pid_location, mrg_location) = pid_and_mrg_locations(group);
    let pid_ids = keyed_identifiers(domain, &group.pid.identifiers, pid_location)?;
    let mrg_cx = group.mrg.as_ref().map(|mrg| mrg.prior_identifiers.as_slice()).unwrap_or_default();
    let mrg_ids = keyed_identifiers(domain, mrg_cx, mrg_location)?;
    if mrg_ids.is_empty() {
        return Err(rejected(mrg_location(), ErrorCode::RequiredFieldMissing, "MRG-1 holds no prior identifier"));
    }
    check_single_valued(&pid_ids, pid_location)?;
    Ok((pid_ids, mrg_ids))
}

fn same_identifier(a: &Keyed, b: &Keyed) -> bool {
    a.key == b.key && a.identifier.id == b.identifier.id
}

/// Normalizes identifiers and drops repeats. More than [`MAX_IDENTIFIERS`] is refused: no
/// patient has that many, and each becomes a bound parameter of the lookup.
fn keyed_identifiers(
    domain: &AffinityDomain,
    cxs: &[hie_hl7::adt::Cx],
    location: impl Fn() -> Location,
) -> Result<Vec<Keyed>, ApplyError> {
    if cxs.len() > MAX_IDENTIFIERS {
        let message = format!("{} identifiers; at most {MAX_IDENTIFIERS} are accepted", cxs.len());
        return Err(rejected(location(), ErrorCode::DataType, &message));
    }
    let mut keyed: Vec<Keyed> = Vec::with_capacity(cxs.len());
    for cx in cxs {
        let mut identifier = from_wire::identifier(cx);
        identifier.authority = domain.normalize(&identifier.authority);
        let key = domain.key(&identifier.authority).as_str().to_owned();
        if keyed.iter().any(|seen| seen.key == key && seen.identifier.id == identifier.id) {
            continue;
        }
        keyed.push(Keyed {
            in_affinity_domain: domain.is_affinity_domain(&identifier.authority),
            local: domain.is_local(&identifier.authority),
            key,
            identifier,
        });
    }
    Ok(keyed)
}

/// Two identifiers in the affinity domain's (or the local) authority would be two patients.
fn check_single_valued(identifiers: &[Keyed], location: impl Fn() -> Location) -> Result<(), ApplyError> {
    let n_affinity = identifiers.iter().filter(|keyed| keyed.in_affinity_domain).count();
    let n_local = identifiers.iter().filter(|keyed| keyed.local).count();
    if n_affinity > 1 {
        return Err(rejected(
            location(),
            ErrorCode::DuplicateKey,
            "two identifiers in the affinity domain's authority",
        ));
    }
    if n_local > 1 {
        return Err(rejected(location(), ErrorCode::DuplicateKey, "two identifiers in the local authority"));
    }
    Ok(())
}

/// The one patient the identifiers name, if any, with its stored identifiers; identifiers
/// naming different patients are refused.
async fn resolve(
    tx: &mut Tx<'_>,
    identifiers: &[Keyed],
    location: impl Fn() -> Location,
) -> Result<Option<(PatientRow, Vec<IdentifierRow>)>, ApplyError> {
    let keys: Vec<(&str, &str)> =
        identifiers.iter().map(|keyed| (keyed.key.as_str(), keyed.identifier.id.as_str())).collect();
    let mut holders = patients::patients_holding(tx, &keys).await?;
    if holders.len() > 1 {
        return Err(rejected(location(), ErrorCode::DuplicateKey, "the identifiers belong to different patients"));
    }
    Ok(holders.pop())
}

fn refuse_if_merged(patient: &PatientRow, location: Location) -> Result<(), ApplyError> {
    match patient.merged_into {
        Some(_) => Err(rejected(location, ErrorCode::RecordLocked, "the patient was merged into another patient")),
        None => Ok(()),
    }
}

/// A patient linked to one affinity-domain ID (or MRN) must not silently gain a second one.
/// `existing` are the patient's stored identifiers.
fn check_no_conflicting_link(
    existing: &[IdentifierRow],
    identifiers: &[Keyed],
    location: impl Fn() -> Location,
) -> Result<(), ApplyError> {
    for keyed in identifiers.iter().filter(|keyed| keyed.in_affinity_domain || keyed.local) {
        let conflict = existing
            .iter()
            .any(|row| row.active && row.authority_key == keyed.key && row.id_value != keyed.identifier.id);
        if conflict {
            let what = if keyed.in_affinity_domain { "affinity-domain" } else { "local" };
            let message = format!("the patient already has another {what} identifier");
            return Err(rejected(location(), ErrorCode::DuplicateKey, &message));
        }
    }
    Ok(())
}

/// Attaches identifiers the patient does not hold yet (`existing` are its stored ones), in one
/// statement; returns their CX strings.
async fn attach_all(
    tx: &mut Tx<'_>,
    patient_id: i64,
    identifiers: &[Keyed],
    existing: &[IdentifierRow],
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<IdentifierRow> = identifiers
        .iter()
        .filter(|keyed| {
            !existing
                .iter()
                .any(|row| row.active && row.authority_key == keyed.key && row.id_value == keyed.identifier.id)
        })
        .map(|keyed| identifier_row(patient_id, keyed))
        .collect();
    let position = i64::try_from(existing.len()).unwrap_or(i64::MAX);
    patients::attach_identifiers(tx, &rows, position).await?;
    Ok(rows.iter().map(crate::to_wire::cx_string).collect())
}

/// Whether the patient has (or is getting) an affinity-domain ID, i.e. the registry can know it.
fn linked(domain: &AffinityDomain, existing: &[IdentifierRow], identifiers: &[Keyed]) -> bool {
    let affinity_key = affinity_key(domain);
    identifiers.iter().any(|keyed| keyed.in_affinity_domain)
        || existing.iter().any(|row| row.active && row.authority_key == affinity_key)
}

fn affinity_key(domain: &AffinityDomain) -> String {
    let authority = hie_core::AssigningAuthority {
        universal_id: domain.patient_id_authority().to_string(),
        universal_id_type: "ISO".to_owned(),
        ..Default::default()
    };
    domain.key(&authority).as_str().to_owned()
}

async fn retired_on(tx: &mut Tx<'_>, identifiers: &[Keyed], patient_id: i64) -> Result<bool, StoreError> {
    for keyed in identifiers {
        match patients::find_identifier(tx, &keyed.key, &keyed.identifier.id).await? {
            Some(row) if !row.active && row.patient_id == patient_id => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The patients reached by following `merged_into` from `patient_id` (itself first). Bounded,
/// so a corrupt cycle in the table cannot hang the writer.
async fn merge_chain(tx: &mut Tx<'_>, patient_id: i64) -> Result<Vec<i64>, StoreError> {
    const MAX_CHAIN: usize = 1_000;
    let mut chain = vec![patient_id];
    let mut current = patient_id;
    while chain.len() < MAX_CHAIN {
        match patients::patient(tx, current).await? {
            Some(PatientRow { merged_into: Some(next), .. }) if !chain.contains(&next) => {
                chain.push(next);
                current = next;
            }
            _ => break,
        }
    }
    Ok(chain)
}

/// A patient's first active identifier as CX, for history and error texts.
async fn describe(tx: &mut Tx<'_>, patient_id: i64) -> Result<String, StoreError> {
    let identifiers = patients::identifiers_of(tx, patient_id).await?;
    Ok(identifiers
        .iter()
        .find(|row| row.active)
        .or(identifiers.first())
        .map(crate::to_wire::cx_string)
        .unwrap_or_else(|| format!("patient #{patient_id}")))
}

/// Queues the identity feed (ITI-8) for a patient the registry can know: one with an
/// affinity-domain ID. Keyed by patient, so feeds for one patient leave in order. A merge names
/// the prior patient too (`crate::feed::FeedItem` reads the payload), for MRG-1.
async fn feed_identity(
    tx: &mut Tx<'_>,
    patient_id: i64,
    prior_id: Option<i64>,
    linked: bool,
    event: &str,
    now: i64,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    if !linked {
        return Ok(());
    }
    let key = format!("patient:{patient_id}");
    let payload = match prior_id {
        Some(prior_id) => format!("event={event};patient={patient_id};prior={prior_id}"),
        None => format!("event={event};patient={patient_id}"),
    };
    let item = outbox::NewItem { topic: IDENTITY_FEED_TOPIC, key: &key, payload: &payload, idempotency_key: None };
    outbox::enqueue(tx, &item, now).await?;
    applied.enqueued = true;
    Ok(())
}

fn identifier_row(patient_id: i64, keyed: &Keyed) -> IdentifierRow {
    IdentifierRow {
        authority_key: keyed.key.clone(),
        id_value: keyed.identifier.id.clone(),
        patient_id,
        namespace_id: keyed.identifier.authority.namespace_id.clone(),
        universal_id: keyed.identifier.authority.universal_id.clone(),
        universal_id_type: keyed.identifier.authority.universal_id_type.clone(),
        id_type_code: keyed.identifier.id_type_code.clone(),
        active: true,
    }
}

fn rejected(location: Location, code: ErrorCode, message: &str) -> ApplyError {
    ApplyError::Rejected(Hl7Error { location, code, message: message.to_owned() })
}

fn location(segment: &str, sequence: usize, field: usize, component: usize) -> Location {
    Location { segment: segment.to_owned(), sequence, field, component }
}
