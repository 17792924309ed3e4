//! Registering a checked [`Plan`] in the caller's transaction: the rules that need the registry's
//! state (ITI TF-2b 3.42.4.1.3 for ITI-42, 3.57.4.1.3 for ITI-57), then every write.
//!
//! All checks run before the first write, and the caller commits only when [`apply`] succeeds,
//! so a refused submission registers nothing (ITI TF-3 4.2.4: a submission is all or nothing).
//!
//! Rules decided here:
//! - The SubmissionSet's patient must be known to the feed and not merged away
//!   (XDSUnknownPatientId). A merged (subsumed) id is refused rather than followed: after an A40
//!   the registry moves the subsumed patient's metadata to the survivor (ITI TF-2a 3.8.4.2.3),
//!   and a Document Source that still uses the old id has the wrong identity for the patient.
//! - A SubmissionSet or Folder uniqueId must be new (XDSDuplicateUniqueIdInRegistry).
//! - A DocumentEntry uniqueId already registered: with another hash it is XDSNonIdenticalHash,
//!   another size XDSNonIdenticalSize, another patient XDSDuplicateUniqueIdInRegistry; with the
//!   same hash and size it is a resubmission and is registered as a second DocumentEntry, as
//!   NIST test 12004 (step `resubmit_doc`) requires. A retry of a whole submission after a lost
//!   response still fails, on its SubmissionSet uniqueId, which the client then resolves with
//!   ITI-18 (reliability-security R5).
//! - RPLC, XFRM, APND and XFRM_RPLC need a registered DocumentEntry (UnresolvedReferenceException)
//!   that is Approved (XDSRegistryDeprecatedDocumentError) and of the same patient
//!   (XDSPatientIdDoesNotMatch). RPLC and XFRM_RPLC deprecate it in the same transaction, and
//!   the replacement joins every Folder the original was in (ITI TF-3 4.2.2.2.1).
//! - ITI-57: UpdateAvailabilityStatus needs a registered DocumentEntry or Folder of the patient
//!   whose status is OriginalStatus (XDSMetadataUpdateError); a new version needs the latest
//!   version of its lid as PreviousVersion (XDSMetadataVersionError), Approved, with the same
//!   uniqueId, hash, size and patient; the previous version becomes Deprecated.

use std::collections::HashMap;

use hie_store::Tx;
use hie_store::refregistry::{self, AssociationRow, ExistingObject, ObjectKind};
use hie_xds::Association;
use hie_xds::RegistryObject;
use hie_xds::vocabulary::{ASSOCIATION_HAS_MEMBER, STATUS_APPROVED, STATUS_DEPRECATED};

use crate::error::{Failure, Violation};
use crate::ids;
use crate::metadata::{End, Kind, Plan, serialize};

/// Checks `plan` against the registry and writes it, in `tx`. On `Err` the caller rolls back.
pub(crate) async fn apply(tx: &mut Tx<'_>, plan: &mut Plan, now: i64, now_dtm: &str) -> Result<(), Failure> {
    refregistry::lock_keys(tx, &plan.lock_keys()).await?;
    let mut violations = Vec::new();
    let submission_set_label = plan.label(&plan.submission_set.entry_uuid);

    match refregistry::patient(tx, &plan.patient_id).await? {
        Some(patient) if patient.merged_into.is_none() => {}
        known => violations.push(Violation::UnknownPatient {
            object: submission_set_label.clone(),
            patient_id: plan.patient_id.clone(),
            merged: known.is_some(),
        }),
    }

    let package_unique_ids: Vec<&str> = std::iter::once(plan.submission_set.unique_id.as_str())
        .chain(plan.folders.iter().map(|folder| folder.unique_id.as_str()))
        .collect();
    for unique_id in refregistry::package_unique_ids_in_use(tx, &package_unique_ids).await? {
        violations.push(Violation::DuplicateUniqueIdInRegistry { unique_id });
    }

    let new_unique_ids: Vec<&str> = plan
        .documents
        .iter()
        .filter(|document| document.update_of.is_none())
        .map(|document| document.row.unique_id.as_str())
        .collect();
    for existing in refregistry::documents_with_unique_ids(tx, &new_unique_ids).await? {
        let Some(document) = plan.documents.iter().find(|document| document.row.unique_id == existing.unique_id) else {
            continue;
        };
        let unique_id = existing.unique_id.clone();
        if existing.patient_id != document.row.patient_id || existing.hash.is_none() {
            violations.push(Violation::DuplicateUniqueIdInRegistry { unique_id });
        } else if existing.hash != document.row.hash {
            violations.push(Violation::NonIdenticalHash { unique_id });
        } else if existing.size != document.row.size {
            violations.push(Violation::NonIdenticalSize { unique_id });
        }
    }

    // One lookup for every entryUUID the submission gives (must be new) or refers to (must exist).
    let mut lookup: Vec<&str> = Vec::new();
    let new_uuids: Vec<&str> = std::iter::once(plan.submission_set.entry_uuid.as_str())
        .chain(plan.documents.iter().map(|document| document.row.entry_uuid.as_str()))
        .chain(plan.folders.iter().map(|folder| folder.entry_uuid.as_str()))
        .chain(plan.associations.iter().map(|association| association.row.entry_uuid.as_str()))
        .collect();
    lookup.extend(&new_uuids);
    for association in &plan.associations {
        if association.source == End::Existing {
            lookup.push(&association.row.source_uuid);
        }
        if association.target == End::Existing {
            lookup.push(&association.row.target_uuid);
        }
    }
    lookup.sort_unstable();
    lookup.dedup();
    let existing: HashMap<String, ExistingObject> = refregistry::existing_objects(tx, &lookup)
        .await?
        .into_iter()
        .map(|object| (object.entry_uuid.clone(), object))
        .collect();
    for uuid in &new_uuids {
        if existing.contains_key(*uuid) {
            violations.push(Violation::Metadata {
                object: plan.label(uuid),
                problem: "the entryUUID is already used by a registered object".to_owned(),
            });
        }
    }

    let mut deprecate_documents: Vec<String> = Vec::new();
    let mut status_changes: Vec<(String, ObjectKind, String)> = Vec::new();
    let mut touched_folders: Vec<String> = Vec::new();
    let mut replaced_by: Vec<(String, String)> = Vec::new();
    for association in &plan.associations {
        let object = plan.label(&association.row.entry_uuid);
        let unresolved = |reference: &str| Violation::UnresolvedReference {
            object: object.clone(),
            reference: reference.to_owned(),
        };
        let target = existing.get(&association.row.target_uuid).filter(|_| association.target == End::Existing);
        let source = existing.get(&association.row.source_uuid).filter(|_| association.source == End::Existing);
        if association.target == End::Existing && target.is_none() {
            violations.push(unresolved(&association.row.target_uuid));
            continue;
        }
        if association.source == End::Existing && source.is_none() {
            violations.push(unresolved(&association.row.source_uuid));
            continue;
        }
        match association.kind {
            Kind::HasMember => {
                if let Some(folder) = source {
                    if folder.kind != ObjectKind::Folder {
                        violations.push(Violation::Metadata {
                            object: object.clone(),
                            problem: "a HasMember from a registered object must come from a Folder".to_owned(),
                        });
                        continue;
                    }
                    if folder.patient_id != plan.patient_id {
                        violations.push(Violation::PatientMismatch {
                            object: object.clone(),
                            other: folder.entry_uuid.clone(),
                        });
                    }
                    touched_folders.push(folder.entry_uuid.clone());
                }
                if let Some(target) = target {
                    let is_member_kind =
                        matches!(target.kind, ObjectKind::DocumentEntry | ObjectKind::Folder | ObjectKind::Association);
                    let folder_member_ok =
                        association.source == End::SubmissionSet || target.kind == ObjectKind::DocumentEntry;
                    if !is_member_kind || !folder_member_ok {
                        violations.push(Violation::Metadata {
                            object: object.clone(),
                            problem: "the HasMember target is not a DocumentEntry, Folder or Association".to_owned(),
                        });
                    } else if association.source != End::SubmissionSet && target.patient_id != plan.patient_id {
                        violations.push(Violation::PatientMismatch {
                            object: object.clone(),
                            other: target.entry_uuid.clone(),
                        });
                    }
                }
            }
            Kind::Lifecycle { replaces } => {
                let Some(target) = target else { continue };
                if target.kind != ObjectKind::DocumentEntry {
                    violations.push(Violation::Metadata {
                        object: object.clone(),
                        problem: "the target of RPLC, XFRM, APND or XFRM_RPLC must be a DocumentEntry".to_owned(),
                    });
                } else if target.status != STATUS_APPROVED {
                    violations.push(Violation::TargetNotApproved {
                        association: object.clone(),
                        target: target.entry_uuid.clone(),
                    });
                } else if target.patient_id != plan.patient_id {
                    violations
                        .push(Violation::PatientMismatch { object: object.clone(), other: target.entry_uuid.clone() });
                } else if replaces {
                    deprecate_documents.push(target.entry_uuid.clone());
                    replaced_by.push((target.entry_uuid.clone(), association.row.source_uuid.clone()));
                }
            }
            Kind::Signs => {
                if let Some(target) = target
                    && target.kind != ObjectKind::DocumentEntry
                {
                    violations.push(Violation::Metadata {
                        object: object.clone(),
                        problem: "the target of signs must be a DocumentEntry".to_owned(),
                    });
                }
            }
            Kind::AvailabilityStatus => {
                let Some(target) = target else { continue };
                let original = association.original_status.clone().unwrap_or_default();
                let new = association.new_status.clone().unwrap_or_default();
                if !matches!(target.kind, ObjectKind::DocumentEntry | ObjectKind::Folder) {
                    violations.push(Violation::UpdateOperation {
                        object: object.clone(),
                        problem: "only a DocumentEntry's or a Folder's status can be updated".to_owned(),
                    });
                } else if target.patient_id != plan.patient_id {
                    violations
                        .push(Violation::PatientMismatch { object: object.clone(), other: target.entry_uuid.clone() });
                } else if target.status != original {
                    violations.push(Violation::Update {
                        object: object.clone(),
                        problem: format!("OriginalStatus is not the current status of {}", target.entry_uuid),
                    });
                } else {
                    status_changes.push((target.entry_uuid.clone(), target.kind, new));
                }
            }
        }
    }

    // ITI-57 new versions of a logical document.
    for document in &mut plan.documents {
        let Some((lid, previous_version)) = &document.update_of else {
            continue;
        };
        let object = document.row.entry_uuid.clone();
        let Some(latest) = refregistry::latest_document_version(tx, lid).await? else {
            violations.push(Violation::UnresolvedReference { object, reference: lid.clone() });
            continue;
        };
        if previous_version.trim() != latest.version.to_string() {
            violations.push(Violation::Version { object, latest: latest.version, found: previous_version.clone() });
            continue;
        }
        let problem = if latest.status != STATUS_APPROVED {
            Some(("only an Approved version can be updated", true))
        } else if latest.unique_id != document.row.unique_id {
            Some(("a new version keeps the uniqueId", false))
        } else if latest.hash != document.row.hash || latest.size != document.row.size {
            Some(("a new version keeps the hash and size (the document is the same)", false))
        } else {
            None
        };
        match problem {
            Some((problem, true)) => {
                violations.push(Violation::UpdateOperation { object, problem: problem.to_owned() })
            }
            Some((problem, false)) => violations.push(Violation::Update { object, problem: problem.to_owned() }),
            None if latest.patient_id != document.row.patient_id => {
                violations.push(Violation::PatientMismatch { object, other: latest.entry_uuid.clone() })
            }
            None => {
                document.row.version = latest.version + 1;
                deprecate_documents.push(latest.entry_uuid.clone());
            }
        }
    }

    if !violations.is_empty() {
        return Err(Failure::Refused(violations));
    }

    // Writes, in an order that keeps every reference pointing at a stored row.
    refregistry::insert_submission_set(tx, &plan.submission_set).await?;
    for document in &plan.documents {
        refregistry::insert_document(tx, &document.row, &document.codes).await?;
    }
    for folder in &plan.folders {
        refregistry::insert_folder(tx, folder).await?;
    }
    let mut associations: Vec<AssociationRow> =
        plan.associations.iter().map(|association| association.row.clone()).collect();
    for (original, replacement) in &replaced_by {
        for folder in refregistry::folders_holding(tx, original, ASSOCIATION_HAS_MEMBER).await? {
            associations.push(folder_membership(&folder, replacement, now));
            touched_folders.push(folder);
        }
    }
    refregistry::insert_associations(tx, &associations).await?;
    for uuid in &deprecate_documents {
        refregistry::set_document_status(tx, uuid, STATUS_DEPRECATED).await?;
    }
    for (uuid, kind, status) in &status_changes {
        match kind {
            ObjectKind::Folder => refregistry::set_folder_status(tx, uuid, status).await?,
            _ => refregistry::set_document_status(tx, uuid, status).await?,
        };
    }
    touched_folders.sort_unstable();
    touched_folders.dedup();
    for folder in &touched_folders {
        refregistry::touch_folder(tx, folder, now_dtm).await?;
    }
    Ok(())
}

/// The HasMember the registry adds from a Folder to a replacement of one of its documents.
fn folder_membership(folder: &str, document: &str, now: i64) -> AssociationRow {
    let id = ids::new_uuid();
    let association = Association {
        id: id.clone(),
        lid: Some(id.clone()),
        status: Some(STATUS_APPROVED.to_owned()),
        association_type: ASSOCIATION_HAS_MEMBER.to_owned(),
        source_object: folder.to_owned(),
        target_object: document.to_owned(),
        ..Association::default()
    };
    AssociationRow {
        entry_uuid: id,
        association_type: ASSOCIATION_HAS_MEMBER.to_owned(),
        source_uuid: folder.to_owned(),
        target_uuid: document.to_owned(),
        status: STATUS_APPROVED.to_owned(),
        ebrim: serialize(&RegistryObject::Association(association)),
        created_at: now,
    }
}
