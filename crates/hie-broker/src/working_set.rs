//! What a group commit has read and decided before it writes anything: patients and
//! identifiers as the batch's messages have left them so far, and the history, feeds and ACK
//! records still to be written.
//!
//! The identity rules (`patients`) read and change a [`Working`] instead of the database, so a
//! batch costs one read statement up front (everything its messages name, see [`Prefetch`]) and
//! one write at the end (`hie_store::batch`), however many messages it holds. Later messages of
//! a batch see what earlier ones decided, exactly as they would have seen it in the database.
//! Anything not loaded yet (a merge following `merged_into`, say) is read on demand through the
//! same session; the database has not changed meanwhile, since this batch writes last and holds
//! the writer.
//!
//! Invariant: a patient in the set has all its identifiers in the set (a read returns a patient
//! with all of its identifiers, and a new patient has none), so a patient's identifiers are
//! answered from memory.

use std::collections::{HashMap, HashSet};

use hie_core::profile::PatientMergePolicy;
use hie_store::StoreError;
use hie_store::batch::{
    Changes, NewHistory, NewOutboxItem, NewPatient, PatientUpdate, ReadState, StateRequest, StateRows, StoredIdentifier,
};
use hie_store::patients::{Demographics, IdentifierRow, PatientRow, RecordedAck};

/// `(authority_key, id_value)`: an identifier's primary key.
pub(crate) type IdentifierKey = (String, String);

/// The working set over a source of reads (a write session or a transaction).
pub(crate) struct Working<'s, S: ReadState> {
    pub(crate) set: WorkingSet,
    source: &'s mut S,
}

/// The state itself; cloned to undo a message whose later group is refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkingSet {
    patients: HashMap<i64, PatientEntry>,
    identifiers: HashMap<IdentifierKey, IdentifierEntry>,
    /// Keys of each patient's identifiers (see the invariant in the module doc).
    by_patient: HashMap<i64, Vec<IdentifierKey>>,
    /// Keys looked up and not stored.
    absent: HashSet<IdentifierKey>,
    /// Fresh patient ids not used yet, highest first.
    fresh_ids: Vec<i64>,
    /// The highest fresh id handed to this set (see `StateRequest::ids_handed_out`).
    highest_fresh_id: i64,
    history: Vec<NewHistory>,
    outbox: Vec<NewOutboxItem>,
    /// Affinity-domain IDs (CX) of patients merged away (see `Changes::studies_registered_under`).
    merged_away: Vec<String>,
}

/// What a batch's messages name, to load in the first read.
#[derive(Debug, Default)]
pub(crate) struct Prefetch {
    pub(crate) identifiers: Vec<IdentifierKey>,
    /// An upper bound of the patients the batch may create.
    pub(crate) new_ids: usize,
}

#[derive(Debug, Clone)]
struct PatientEntry {
    row: PatientRow,
    /// Created by this batch: inserted, not updated.
    is_new: bool,
    demographics_changed: bool,
    merged_changed: bool,
}

#[derive(Debug, Clone)]
struct IdentifierEntry {
    stored: StoredIdentifier,
    change: IdentifierChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentifierChange {
    Unchanged,
    /// Only retired: written as `active = 0`.
    Retired,
    /// Attached (maybe retired afterwards): written whole.
    Written,
}

impl<'s, S: ReadState> Working<'s, S> {
    pub(crate) fn new(source: &'s mut S) -> Self {
        Working { set: WorkingSet::default(), source }
    }

    /// The first read of a batch: recorded ACKs for `acks`, the patients holding `prefetch`'s
    /// identifiers, fresh ids. Returns the recorded ACKs.
    pub(crate) async fn load(
        &mut self,
        acks: &[(&str, &str)],
        prefetch: &Prefetch,
    ) -> Result<Vec<(String, String, RecordedAck)>, StoreError> {
        let keys: Vec<(&str, &str)> =
            prefetch.identifiers.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        let request = StateRequest {
            acks,
            identifiers: &keys,
            patients: &[],
            new_ids: prefetch.new_ids,
            ids_handed_out: self.set.highest_fresh_id,
        };
        let mut rows = self.source.read_state(&request).await?;
        let recorded = std::mem::take(&mut rows.acks);
        self.set.absorb(rows, &prefetch.identifiers);
        Ok(recorded)
    }

    /// The patients holding any of the active identifiers `keys`, each with all its identifiers,
    /// ordered by patient id (as `patients::patients_holding`).
    pub(crate) async fn holders(
        &mut self,
        keys: &[IdentifierKey],
    ) -> Result<Vec<(PatientRow, Vec<IdentifierRow>)>, StoreError> {
        self.ensure_identifiers(keys).await?;
        let mut patient_ids: Vec<i64> = keys
            .iter()
            .filter_map(|key| self.set.identifiers.get(key))
            .filter(|entry| entry.stored.row.active)
            .map(|entry| entry.stored.row.patient_id)
            .collect();
        patient_ids.sort_unstable();
        patient_ids.dedup();
        let mut holders = Vec::with_capacity(patient_ids.len());
        for patient_id in patient_ids {
            if let Some(patient) = self.patient(patient_id).await? {
                let identifiers = self.set.identifiers_of(patient_id);
                holders.push((patient, identifiers));
            }
        }
        Ok(holders)
    }

    pub(crate) async fn patient(&mut self, patient_id: i64) -> Result<Option<PatientRow>, StoreError> {
        if !self.set.patients.contains_key(&patient_id) {
            let rows = self.read(&StateRequest { patients: &[patient_id], ..self.request() }).await?;
            self.set.absorb(rows, &[]);
        }
        Ok(self.set.patients.get(&patient_id).map(|entry| entry.row.clone()))
    }

    /// A patient's identifiers, active and retired, in list order.
    pub(crate) async fn identifiers_of(&mut self, patient_id: i64) -> Result<Vec<IdentifierRow>, StoreError> {
        self.patient(patient_id).await?;
        Ok(self.set.identifiers_of(patient_id))
    }

    /// An identifier, active or retired.
    pub(crate) async fn find_identifier(&mut self, key: &IdentifierKey) -> Result<Option<IdentifierRow>, StoreError> {
        self.ensure_identifiers(std::slice::from_ref(key)).await?;
        Ok(self.set.identifiers.get(key).map(|entry| entry.stored.row.clone()))
    }

    pub(crate) async fn create_patient(&mut self, demographics: &Demographics) -> Result<i64, StoreError> {
        let id = match self.set.fresh_ids.pop() {
            Some(id) => id,
            None => {
                let rows = self.read(&StateRequest { new_ids: 1, ..self.request() }).await?;
                self.set.absorb(rows, &[]);
                self.set.fresh_ids.pop().ok_or_else(|| StoreError::Corrupt("no fresh patient id".to_owned()))?
            }
        };
        let row = PatientRow { id, merged_into: None, demographics: demographics.clone() };
        self.set
            .patients
            .insert(id, PatientEntry { row, is_new: true, demographics_changed: true, merged_changed: false });
        self.set.by_patient.entry(id).or_default();
        Ok(id)
    }

    pub(crate) async fn update_demographics(
        &mut self,
        patient_id: i64,
        demographics: &Demographics,
    ) -> Result<(), StoreError> {
        self.patient(patient_id).await?;
        if let Some(entry) = self.set.patients.get_mut(&patient_id) {
            entry.row.demographics = demographics.clone();
            entry.demographics_changed = true;
        }
        Ok(())
    }

    pub(crate) async fn set_merged_into(&mut self, prior_id: i64, survivor_id: i64) -> Result<(), StoreError> {
        self.patient(prior_id).await?;
        if let Some(entry) = self.set.patients.get_mut(&prior_id) {
            entry.row.merged_into = Some(survivor_id);
            entry.merged_changed = true;
        }
        Ok(())
    }

    /// Marks an identifier retired (A47); an unknown one is left alone, as an UPDATE would.
    pub(crate) async fn retire_identifier(&mut self, key: &IdentifierKey) -> Result<(), StoreError> {
        self.ensure_identifiers(std::slice::from_ref(key)).await?;
        if let Some(entry) = self.set.identifiers.get_mut(key) {
            entry.stored.row.active = false;
            if entry.change == IdentifierChange::Unchanged {
                entry.change = IdentifierChange::Retired;
            }
        }
        Ok(())
    }

    /// Loads the identifiers among `keys` the set knows nothing about, with their patients.
    async fn ensure_identifiers(&mut self, keys: &[IdentifierKey]) -> Result<(), StoreError> {
        let unknown: Vec<IdentifierKey> = keys
            .iter()
            .filter(|key| !self.set.identifiers.contains_key(*key) && !self.set.absent.contains(*key))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(&str, &str)> = unknown.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        let rows = self.read(&StateRequest { identifiers: &pairs, ..self.request() }).await?;
        self.set.absorb(rows, &unknown);
        Ok(())
    }

    async fn read(&mut self, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
        self.source.read_state(request).await
    }

    fn request(&self) -> StateRequest<'static> {
        StateRequest { ids_handed_out: self.set.highest_fresh_id, ..StateRequest::default() }
    }
}

impl WorkingSet {
    /// Gives `patient_id` the identifiers `rows` (upsert: an identifier held elsewhere, e.g.
    /// retired by A47, moves), at positions from `position` on.
    pub(crate) fn attach_identifiers(&mut self, rows: &[IdentifierRow], position: i64) {
        for (row_idx, row) in rows.iter().enumerate() {
            let key = (row.authority_key.clone(), row.id_value.clone());
            let mut row = row.clone();
            row.active = true;
            let stored = StoredIdentifier { row, position: position + i64::try_from(row_idx).unwrap_or(0) };
            if self.identifiers.get(&key).is_some_and(|entry| entry.stored == stored) {
                // Already so (an update repeating PID-3): rewriting the row would only cost its
                // pages in the commit.
                continue;
            }
            let previous_holder = self.identifiers.get(&key).map(|entry| entry.stored.row.patient_id);
            if previous_holder != Some(stored.row.patient_id) {
                if let Some(previous) = previous_holder
                    && let Some(keys) = self.by_patient.get_mut(&previous)
                {
                    keys.retain(|held| *held != key);
                }
                self.by_patient.entry(stored.row.patient_id).or_default().push(key.clone());
            }
            self.absent.remove(&key);
            self.identifiers.insert(key, IdentifierEntry { stored, change: IdentifierChange::Written });
        }
    }

    pub(crate) fn add_history(&mut self, patient_id: i64, event: &str, message_control_id: &str, detail: &str) {
        self.history.push(NewHistory {
            patient_id,
            event: event.to_owned(),
            message_control_id: message_control_id.to_owned(),
            detail: detail.to_owned(),
        });
    }

    /// Records that the patients known by these affinity-domain IDs were merged away; what that
    /// does to their published studies is the caller's policy (`into_changes`).
    pub(crate) fn merged_away(&mut self, affinity_ids: impl IntoIterator<Item = String>) {
        for id in affinity_ids {
            if !self.merged_away.contains(&id) {
                self.merged_away.push(id);
            }
        }
    }

    pub(crate) fn enqueue(&mut self, topic: &str, key: String, payload: String) {
        self.outbox.push(NewOutboxItem { topic: topic.to_owned(), key, payload });
    }

    /// Everything to write, in a stable order (ids and keys ascending, history and outbox as
    /// they happened). ACK records are the writer's to add. Under `PatientMergePolicy::Republish`
    /// the studies registered under a patient merged away are made due (a new version of each).
    pub(crate) fn into_changes(self, merge: PatientMergePolicy) -> Changes {
        let studies_registered_under = match merge {
            PatientMergePolicy::Republish => self.merged_away,
            // The registry applies the merge it is fed (ITI-8 A40): nothing is resent.
            _ => Vec::new(),
        };
        let mut changes =
            Changes { history: self.history, outbox: self.outbox, studies_registered_under, ..Changes::default() };
        let mut patients: Vec<PatientEntry> = self.patients.into_values().collect();
        patients.sort_unstable_by_key(|entry| entry.row.id);
        for entry in patients {
            if entry.is_new {
                changes.new_patients.push(NewPatient {
                    id: entry.row.id,
                    merged_into: entry.row.merged_into,
                    demographics: entry.row.demographics,
                });
            } else if entry.demographics_changed || entry.merged_changed {
                changes.patient_updates.push(PatientUpdate {
                    id: entry.row.id,
                    demographics: entry.demographics_changed.then_some(entry.row.demographics),
                    merged_into: if entry.merged_changed { entry.row.merged_into } else { None },
                });
            }
        }
        let mut identifiers: Vec<(IdentifierKey, IdentifierEntry)> = self.identifiers.into_iter().collect();
        identifiers.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        for (key, entry) in identifiers {
            match entry.change {
                IdentifierChange::Unchanged => {}
                IdentifierChange::Retired => changes.retired.push(key),
                IdentifierChange::Written => changes.identifiers.push(entry.stored),
            }
        }
        changes
    }

    /// A patient's identifiers in list order: position, then key (as the store orders them).
    fn identifiers_of(&self, patient_id: i64) -> Vec<IdentifierRow> {
        let mut stored: Vec<&StoredIdentifier> = self
            .by_patient
            .get(&patient_id)
            .into_iter()
            .flatten()
            .filter_map(|key| self.identifiers.get(key))
            .map(|entry| &entry.stored)
            .filter(|stored| stored.row.patient_id == patient_id)
            .collect();
        stored.sort_by(|a, b| {
            (a.position, &a.row.authority_key, &a.row.id_value).cmp(&(
                b.position,
                &b.row.authority_key,
                &b.row.id_value,
            ))
        });
        stored.into_iter().map(|stored| stored.row.clone()).collect()
    }

    /// Takes in what a read returned; what the set knows already wins, since it may have
    /// changed. `looked_up` keys that came back with nothing are remembered as absent.
    fn absorb(&mut self, rows: StateRows, looked_up: &[IdentifierKey]) {
        for row in rows.patients {
            self.by_patient.entry(row.id).or_default();
            self.patients.entry(row.id).or_insert(PatientEntry {
                row,
                is_new: false,
                demographics_changed: false,
                merged_changed: false,
            });
        }
        for stored in rows.identifiers {
            let key = (stored.row.authority_key.clone(), stored.row.id_value.clone());
            if self.identifiers.contains_key(&key) {
                continue;
            }
            self.absent.remove(&key);
            self.by_patient.entry(stored.row.patient_id).or_default().push(key.clone());
            self.identifiers.insert(key, IdentifierEntry { stored, change: IdentifierChange::Unchanged });
        }
        for key in looked_up {
            if !self.identifiers.contains_key(key) {
                self.absent.insert(key.clone());
            }
        }
        if let Some(highest) = rows.new_ids.iter().copied().max() {
            self.highest_fresh_id = self.highest_fresh_id.max(highest);
        }
        // Kept highest first, so `pop` hands out the lowest (ids then follow creation order).
        let mut fresh: Vec<i64> = rows.new_ids;
        fresh.append(&mut self.fresh_ids);
        fresh.sort_unstable_by(|a, b| b.cmp(a));
        self.fresh_ids = fresh;
    }
}

#[cfg(test)]
mod tests {
    use hie_store::patients::IdentifierRow;

    use super::*;

    fn stored(id_value: &str, patient_id: i64, position: i64) -> StoredIdentifier {
        let row = IdentifierRow {
            authority_key: "1.2.3".to_owned(),
            id_value: id_value.to_owned(),
            patient_id,
            namespace_id: String::new(),
            universal_id: "1.2.3".to_owned(),
            universal_id_type: "ISO".to_owned(),
            id_type_code: String::new(),
            active: true,
        };
        StoredIdentifier { row, position }
    }

    fn set_holding(identifiers: Vec<StoredIdentifier>) -> WorkingSet {
        let mut set = WorkingSet::default();
        let keys: Vec<IdentifierKey> =
            identifiers.iter().map(|s| (s.row.authority_key.clone(), s.row.id_value.clone())).collect();
        set.absorb(StateRows { identifiers, ..StateRows::default() }, &keys);
        set
    }

    #[test]
    fn attaching_what_is_stored_writes_nothing_and_a_change_is_written_whole() {
        let mut set = set_holding(vec![stored("A", 1, 0), stored("B", 1, 1)]);
        set.attach_identifiers(&[stored("A", 1, 0).row, stored("B", 1, 1).row], 0);
        assert!(set.clone().into_changes(PatientMergePolicy::default()).identifiers.is_empty());

        // B moves to position 0, A to 1: both rows change.
        set.attach_identifiers(&[stored("B", 1, 0).row, stored("A", 1, 0).row], 0);
        let written = set.clone().into_changes(PatientMergePolicy::default()).identifiers;
        assert_eq!(written, vec![stored("A", 1, 1), stored("B", 1, 0)]);

        // Retired, then attached again as it was: written, active.
        let mut retired = stored("C", 2, 0);
        retired.row.active = false;
        let mut set = set_holding(vec![retired]);
        set.attach_identifiers(&[stored("C", 2, 0).row], 0);
        assert_eq!(set.into_changes(PatientMergePolicy::default()).identifiers, vec![stored("C", 2, 0)]);
    }
}
