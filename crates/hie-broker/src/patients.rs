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
//!   Under the profile's `PatientMergePolicy::Republish` (a registry that does not apply merges),
//!   the studies registered under the prior patient's affinity-domain ID are made due in the
//!   merge's own commit, and each gets a new version published under the survivor.
//! - A change of identifier (A47) retires MRG-1 and gives the patient PID-3.
//! - Updates to a patient that was merged away are refused: its record is closed.
//!
//! The rules read and change a working set (`working_set`), not the database: the group-commit
//! writer loads a whole batch's patients in one read and writes every decision in one statement.
//! [`apply_adt`] does the same for a single message inside a caller's transaction.

use hie_core::profile::PatientMergePolicy;
use hie_core::{AffinityDomain, PatientIdentifier};
use hie_hl7::adt::{AdtKind, AdtMessage, ErrorCode, Hl7Error, Location, PatientGroup};
use hie_store::batch::{self, ReadState};
use hie_store::patients::{Demographics, IdentifierRow, PatientRow};
use hie_store::{StoreError, Tx};

use crate::from_wire;
use crate::working_set::{IdentifierKey, Prefetch, Working};

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

/// Applies one ADT message inside `tx`: reads what it names, decides, and writes the outcome in
/// one statement. The caller commits (or rolls back) and answers. A refusal writes nothing.
/// `merge` is what a merge does to the prior patient's published studies.
pub async fn apply_adt(
    tx: &mut Tx<'_>,
    domain: &AffinityDomain,
    merge: PatientMergePolicy,
    message: &AdtMessage,
    now: i64,
) -> Result<Applied, ApplyError> {
    let mut work = Working::new(tx);
    work.load(&[], &prefetch(domain, [message])).await?;
    let applied = apply_in(&mut work, domain, message).await?;
    let changes = work.set.into_changes(merge);
    batch::write_changes(tx, &changes, now).await?;
    Ok(applied)
}

/// What a batch of messages names, for the batch's first read: every PID-3 and MRG-1
/// identifier the rules will look up, and an upper bound of the patients they may create.
pub(crate) fn prefetch<'m>(domain: &AffinityDomain, messages: impl IntoIterator<Item = &'m AdtMessage>) -> Prefetch {
    let mut prefetch = Prefetch::default();
    for message in messages {
        let groups = match message.event.kind() {
            AdtKind::Demographics => &message.groups[..message.groups.len().min(1)],
            AdtKind::Merge | AdtKind::ChangeIdentifier => &message.groups[..],
        };
        for group in groups {
            let mrg = group.mrg.as_ref().map(|mrg| mrg.prior_identifiers.as_slice()).unwrap_or_default();
            for cxs in [group.pid.identifiers.as_slice(), mrg] {
                // Over the cap the message is refused before any lookup.
                if let Ok(keyed) = keyed_identifiers(domain, cxs, || location("PID", 1, 3, 0)) {
                    prefetch.identifiers.extend(keyed.into_iter().map(|keyed| (keyed.key, keyed.identifier.id)));
                }
            }
            prefetch.new_ids += match message.event.kind() {
                AdtKind::Demographics => 1,
                // Survivor and prior, when neither was known.
                AdtKind::Merge => 2,
                AdtKind::ChangeIdentifier => 0,
            };
        }
    }
    prefetch.identifiers.sort_unstable();
    prefetch.identifiers.dedup();
    prefetch
}

/// Applies one message to the working set. A message with several PID/MRG groups (A40, A47)
/// may be refused at a later group after earlier ones changed the set: the set is restored, so
/// the refusal leaves no trace (what a savepoint did when the rules wrote to the database).
pub(crate) async fn apply_in<S: ReadState>(
    work: &mut Working<'_, S>,
    domain: &AffinityDomain,
    message: &AdtMessage,
) -> Result<Applied, ApplyError> {
    if message.groups.len() <= 1 {
        return apply_groups(work, domain, message).await;
    }
    let before = work.set.clone();
    let applied = apply_groups(work, domain, message).await;
    if applied.is_err() {
        work.set = before;
    }
    applied
}

async fn apply_groups<S: ReadState>(
    work: &mut Working<'_, S>,
    domain: &AffinityDomain,
    message: &AdtMessage,
) -> Result<Applied, ApplyError> {
    let control_id = message.header.control_id.as_str();
    // Variants are named after the trigger events (A01…A47).
    let event = format!("{:?}", message.event);
    let mut applied = Applied { changed_patients: Vec::new(), enqueued: false };
    match message.event.kind() {
        AdtKind::Demographics => {
            // Only the first PID group matters for these events (HL7 v2 3.3).
            if let Some(group) = message.groups.first() {
                apply_demographics(work, domain, group, &event, control_id, &mut applied).await?;
            }
        }
        AdtKind::Merge => {
            for group in &message.groups {
                apply_merge(work, domain, group, &event, control_id, &mut applied).await?;
            }
        }
        AdtKind::ChangeIdentifier => {
            for group in &message.groups {
                apply_change_identifier(work, domain, group, &event, control_id, &mut applied).await?;
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

impl Keyed {
    fn identifier_key(&self) -> IdentifierKey {
        (self.key.clone(), self.identifier.id.clone())
    }
}

async fn apply_demographics<S: ReadState>(
    work: &mut Working<'_, S>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let pid_location = || location("PID", group.pid_index, 3, 0);
    let identifiers = keyed_identifiers(domain, &group.pid.identifiers, pid_location)?;
    check_single_valued(&identifiers, pid_location)?;
    let demographics = from_wire::demographics(&group.pid);
    let (patient, existing) = match resolve(work, &identifiers, pid_location).await? {
        Some((patient, existing)) => {
            refuse_if_merged(&patient, pid_location())?;
            check_no_conflicting_link(&existing, &identifiers, pid_location)?;
            work.update_demographics(patient.id, &demographics).await?;
            (patient.id, existing)
        }
        None => (work.create_patient(&demographics).await?, Vec::new()),
    };
    let added = attach_all(work, patient, &identifiers, &existing);
    let detail =
        if added.is_empty() { "demographics".to_owned() } else { format!("identifiers added: {}", added.join(" ")) };
    work.set.add_history(patient, event, control_id, &detail);
    applied.changed_patients.push(patient);
    feed_identity(work, patient, None, linked(domain, &existing, &identifiers), event, applied);
    Ok(())
}

async fn apply_merge<S: ReadState>(
    work: &mut Working<'_, S>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let (pid_location, mrg_location) = pid_and_mrg_locations(group);
    let (survivor_ids, prior_ids) = pid_and_mrg_identifiers(domain, group)?;
    if prior_ids.iter().any(|prior| survivor_ids.iter().any(|survivor| same_identifier(survivor, prior))) {
        return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 names the same identifier as PID-3"));
    }

    // Every check reads before anything is written, so a refusal leaves no trace and needs no
    // savepoint (the writer relies on this).
    let survivor = resolve(work, &survivor_ids, pid_location).await?;
    let prior = resolve(work, &prior_ids, mrg_location).await?;
    if let (Some((survivor, _)), Some((prior, _))) = (&survivor, &prior) {
        if prior.id == survivor.id {
            return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 and PID-3 name the same patient"));
        }
        if prior.merged_into == Some(survivor.id) || survivor.merged_into == Some(prior.id) {
            // A repeat, or an inverse duplicate of a merge already applied: nothing to change,
            // and refusing would only make the sender retry forever.
            work.set.add_history(survivor.id, event, control_id, "duplicate merge ignored");
            return Ok(());
        }
        if merge_chain(work, survivor.id).await?.contains(&prior.id) {
            return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "the merge would make a cycle"));
        }
    }
    if let Some(other) = survivor.as_ref().and_then(|(survivor, _)| survivor.merged_into) {
        let message = format!("the surviving patient was merged into {}", describe(work, other).await?);
        return Err(rejected(pid_location(), ErrorCode::RecordLocked, &message));
    }
    if let Some(other) = prior.as_ref().and_then(|(prior, _)| prior.merged_into) {
        let message = format!("the prior patient was already merged into {}", describe(work, other).await?);
        return Err(rejected(mrg_location(), ErrorCode::RecordLocked, &message));
    }
    let survivor_existing = survivor.as_ref().map(|(_, identifiers)| identifiers.clone()).unwrap_or_default();
    check_no_conflicting_link(&survivor_existing, &survivor_ids, pid_location)?;

    let demographics = from_wire::demographics(&group.pid);
    let survivor_id = match &survivor {
        Some((survivor, _)) => {
            work.update_demographics(survivor.id, &demographics).await?;
            survivor.id
        }
        None => {
            let id = work.create_patient(&demographics).await?;
            work.set.add_history(id, event, control_id, "created as merge survivor");
            id
        }
    };
    attach_all(work, survivor_id, &survivor_ids, &survivor_existing);
    let prior_id = match &prior {
        Some((prior, _)) => prior.id,
        None => {
            // A40 before the prior patient was ever announced: keep the prior identifiers, merged,
            // so a late message under them is recognized and refused.
            let id = work.create_patient(&Demographics::default()).await?;
            attach_all(work, id, &prior_ids, &[]);
            work.set.add_history(id, event, control_id, "created as merge prior (not known before)");
            id
        }
    };
    work.set_merged_into(prior_id, survivor_id).await?;
    // The IDs the registry knows the prior patient by: what its published studies went under
    // (`hie_broker::publish::affinity_patient_id`), retired ones included.
    let prior_affinity_key = affinity_key(domain);
    let prior_affinity_ids: Vec<String> = work
        .identifiers_of(prior_id)
        .await?
        .iter()
        .filter(|row| row.authority_key == prior_affinity_key)
        .map(|row| crate::publish::metadata::affinity_cx(&row.id_value, domain.patient_id_authority().as_str()))
        .collect();
    work.set.merged_away(prior_affinity_ids);
    let prior_name = describe(work, prior_id).await?;
    let survivor_name = describe(work, survivor_id).await?;
    work.set.add_history(prior_id, event, control_id, &format!("merged into {survivor_name}"));
    work.set.add_history(survivor_id, event, control_id, &format!("absorbed {prior_name}"));
    applied.changed_patients.extend([prior_id, survivor_id]);
    let linked = linked(domain, &survivor_existing, &survivor_ids);
    feed_identity(work, survivor_id, Some(prior_id), linked, event, applied);
    Ok(())
}

async fn apply_change_identifier<S: ReadState>(
    work: &mut Working<'_, S>,
    domain: &AffinityDomain,
    group: &PatientGroup,
    event: &str,
    control_id: &str,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let (pid_location, mrg_location) = pid_and_mrg_locations(group);
    let (new_ids, old_ids) = pid_and_mrg_identifiers(domain, group)?;
    if old_ids.iter().all(|old| new_ids.iter().any(|new| same_identifier(new, old))) {
        return Err(rejected(mrg_location(), ErrorCode::DuplicateKey, "MRG-1 names the same identifier as PID-3"));
    }

    // Reads and checks first: a refusal writes nothing.
    let holder = resolve(work, &new_ids, pid_location).await?;
    let Some((patient, existing)) = resolve(work, &old_ids, mrg_location).await? else {
        // A repeat after the change was applied: the old identifier is retired and the new one
        // is active on the same patient.
        if let Some((holder, _)) = &holder
            && retired_on(work, &old_ids, holder.id).await?
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
        work.retire_identifier(&old.identifier_key()).await?;
    }
    work.update_demographics(patient.id, &from_wire::demographics(&group.pid)).await?;
    let added = attach_all(work, patient.id, &new_ids, &remaining);
    let retired: Vec<&str> = retiring.iter().map(|old| old.identifier.id.as_str()).collect();
    let detail = format!("identifier changed: retired {} added {}", retired.join(" "), added.join(" "));
    work.set.add_history(patient.id, event, control_id, &detail);
    applied.changed_patients.push(patient.id);
    feed_identity(work, patient.id, None, linked(domain, &remaining, &new_ids), event, applied);
    Ok(())
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
async fn resolve<S: ReadState>(
    work: &mut Working<'_, S>,
    identifiers: &[Keyed],
    location: impl Fn() -> Location,
) -> Result<Option<(PatientRow, Vec<IdentifierRow>)>, ApplyError> {
    let keys: Vec<IdentifierKey> = identifiers.iter().map(Keyed::identifier_key).collect();
    let mut holders = work.holders(&keys).await?;
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

/// Attaches identifiers the patient does not hold yet (`existing` are its stored ones); returns
/// their CX strings.
fn attach_all<S: ReadState>(
    work: &mut Working<'_, S>,
    patient_id: i64,
    identifiers: &[Keyed],
    existing: &[IdentifierRow],
) -> Vec<String> {
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
    work.set.attach_identifiers(&rows, position);
    rows.iter().map(crate::to_wire::cx_string).collect()
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

async fn retired_on<S: ReadState>(
    work: &mut Working<'_, S>,
    identifiers: &[Keyed],
    patient_id: i64,
) -> Result<bool, StoreError> {
    for keyed in identifiers {
        match work.find_identifier(&keyed.identifier_key()).await? {
            Some(row) if !row.active && row.patient_id == patient_id => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The patients reached by following `merged_into` from `patient_id` (itself first). Bounded,
/// so a corrupt cycle in the table cannot hang the writer.
async fn merge_chain<S: ReadState>(work: &mut Working<'_, S>, patient_id: i64) -> Result<Vec<i64>, StoreError> {
    const MAX_CHAIN: usize = 1_000;
    let mut chain = vec![patient_id];
    let mut current = patient_id;
    while chain.len() < MAX_CHAIN {
        match work.patient(current).await? {
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
async fn describe<S: ReadState>(work: &mut Working<'_, S>, patient_id: i64) -> Result<String, StoreError> {
    let identifiers = work.identifiers_of(patient_id).await?;
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
fn feed_identity<S: ReadState>(
    work: &mut Working<'_, S>,
    patient_id: i64,
    prior_id: Option<i64>,
    linked: bool,
    event: &str,
    applied: &mut Applied,
) {
    if !linked {
        return;
    }
    let key = format!("patient:{patient_id}");
    let payload = match prior_id {
        Some(prior_id) => format!("event={event};patient={patient_id};prior={prior_id}"),
        None => format!("event={event};patient={patient_id}"),
    };
    work.set.enqueue(IDENTITY_FEED_TOPIC, key, payload);
    applied.enqueued = true;
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
