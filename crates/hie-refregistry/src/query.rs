//! ITI-18 Registry Stored Query (ITI TF-2a 3.18.4.1.2.3.7): FindDocuments, FindSubmissionSets,
//! GetDocuments, GetAssociations, GetSubmissionSetAndContents and GetRelatedDocuments, answered
//! as LeafClass (the objects) or ObjectRef (their ids).
//!
//! Parameters follow ITI TF-2a 3.18.4.1.2.3: values are quoted strings or numbers, lists in
//! parentheses; a parameter given as several Slots is AND-ed (eventCodeList,
//! confidentialityCode), the values of one Slot OR-ed. Coded values are `code^^scheme`, times DTM
//! (`From` inclusive, `To` exclusive); authorPerson patterns use `%` and `_` as SQL LIKE does.
//! A parameter the query does not define, a single-valued one given twice, a missing required
//! one, and two parameters that exclude each other are refused.
//!
//! A patientId of another affinity domain, or of no known patient, matches nothing (Success,
//! empty); one that is not a CX is refused. More than `max_results` objects is XDSTooManyResults,
//! objects of several patients asked for by id XDSResultNotSinglePatient.

use std::collections::HashSet;

use hie_store::refregistry::{AssociationEnd, CodeMatch, DocumentFilter, DocumentRow, SubmissionSetFilter, TimeRange};
use hie_xds::RegistryObject;
use hie_xds::ebrim::{Code, Slot};
use hie_xds::messages::{AdhocQueryRequest, ReturnType, parse_query_values};
use hie_xds::vocabulary::*;

use crate::Inner;
use crate::error::{Failure, Violation};
use crate::ids::{self, PatientIdProblem};
use crate::render;

/// Runs a stored query and returns the objects (or references) to answer with.
pub(crate) async fn run(registry: &Inner, request: &AdhocQueryRequest) -> Result<Vec<RegistryObject>, Failure> {
    let leaf_class = match request.return_type {
        ReturnType::LeafClass => true,
        ReturnType::ObjectRef => false,
        other => {
            return Err(Violation::Parameter {
                parameter: "returnType".to_owned(),
                problem: format!("{} is not LeafClass or ObjectRef", other.as_str()),
            }
            .into());
        }
    };
    let query = Query { registry, leaf_class, home: registry.config.home() };
    match request.query_id.as_str() {
        QUERY_FIND_DOCUMENTS => query.find_documents(&Params::new(request, FIND_DOCUMENTS)?).await,
        QUERY_FIND_SUBMISSION_SETS => query.find_submission_sets(&Params::new(request, FIND_SUBMISSION_SETS)?).await,
        QUERY_GET_DOCUMENTS => query.get_documents(&Params::new(request, GET_DOCUMENTS)?).await,
        QUERY_GET_ASSOCIATIONS => query.get_associations(&Params::new(request, GET_ASSOCIATIONS)?).await,
        QUERY_GET_SUBMISSION_SET_AND_CONTENTS => {
            query.get_submission_set_and_contents(&Params::new(request, GET_SUBMISSION_SET_AND_CONTENTS)?).await
        }
        QUERY_GET_RELATED_DOCUMENTS => query.get_related_documents(&Params::new(request, GET_RELATED_DOCUMENTS)?).await,
        other => Err(Violation::UnknownStoredQuery { query_id: other.to_owned() }.into()),
    }
}

struct Query<'r> {
    registry: &'r Inner,
    leaf_class: bool,
    home: Option<String>,
}

impl Query<'_> {
    fn max_results(&self) -> usize {
        self.registry.config.max_results
    }

    fn cap(&self, n_objects: usize) -> Result<(), Failure> {
        if n_objects > self.max_results() {
            return Err(Violation::TooManyResults { limit: self.max_results() }.into());
        }
        Ok(())
    }

    async fn find_documents(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        // Every parameter is checked before a patient of another domain ends the query.
        let patient_id = self.patient(params, "$XDSDocumentEntryPatientId")?;
        let filter = DocumentFilter {
            patient_id: patient_id.clone().unwrap_or_default(),
            statuses: params.required_list("$XDSDocumentEntryStatus")?,
            object_types: params.list("$XDSDocumentEntryType"),
            class_codes: params.codes("$XDSDocumentEntryClassCode")?,
            type_codes: params.codes("$XDSDocumentEntryTypeCode")?,
            practice_setting_codes: params.codes("$XDSDocumentEntryPracticeSettingCode")?,
            healthcare_facility_type_codes: params.codes("$XDSDocumentEntryHealthcareFacilityTypeCode")?,
            format_codes: params.codes("$XDSDocumentEntryFormatCode")?,
            event_codes: params.code_groups("$XDSDocumentEntryEventCodeList")?,
            confidentiality_codes: params.code_groups("$XDSDocumentEntryConfidentialityCode")?,
            author_persons: params.list("$XDSDocumentEntryAuthorPerson"),
            creation_time: params.range("$XDSDocumentEntryCreationTimeFrom", "$XDSDocumentEntryCreationTimeTo")?,
            service_start_time: params
                .range("$XDSDocumentEntryServiceStartTimeFrom", "$XDSDocumentEntryServiceStartTimeTo")?,
            service_stop_time: params
                .range("$XDSDocumentEntryServiceStopTimeFrom", "$XDSDocumentEntryServiceStopTimeTo")?,
        };
        if patient_id.is_none() {
            return Ok(Vec::new());
        }
        let rows = self.registry.store.reg_find_documents(&filter, self.max_results() + 1).await?;
        self.cap(rows.len())?;
        self.documents(&rows)
    }

    async fn find_submission_sets(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        let patient_id = self.patient(params, "$XDSSubmissionSetPatientId")?;
        let filter = SubmissionSetFilter {
            patient_id: patient_id.clone().unwrap_or_default(),
            statuses: params.required_list("$XDSSubmissionSetStatus")?,
            source_ids: params.list("$XDSSubmissionSetSourceId"),
            content_type_codes: params.codes("$XDSSubmissionSetContentType")?,
            author_persons: params.list("$XDSSubmissionSetAuthorPerson"),
            submission_time: params
                .range("$XDSSubmissionSetSubmissionTimeFrom", "$XDSSubmissionSetSubmissionTimeTo")?,
        };
        if patient_id.is_none() {
            return Ok(Vec::new());
        }
        let rows = self.registry.store.reg_find_submission_sets(&filter, self.max_results() + 1).await?;
        self.cap(rows.len())?;
        rows.iter()
            .map(|row| self.object(&row.entry_uuid, || render::submission_set(row, self.home.as_deref())))
            .collect()
    }

    async fn get_documents(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        let rows = self.documents_by_id(params, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId").await?;
        self.cap(rows.len())?;
        let patients: HashSet<&str> = rows.iter().map(|row| row.patient_id.as_str()).collect();
        if patients.len() > 1 {
            return Err(Violation::ResultNotSinglePatient.into());
        }
        self.documents(&rows)
    }

    async fn get_associations(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        let uuids = canonical_uuids(params.required_list("$uuid")?);
        let rows =
            self.registry.store.reg_associations(&uuids, AssociationEnd::Either, &[], self.max_results() + 1).await?;
        self.cap(rows.len())?;
        rows.iter().map(|row| self.object(&row.entry_uuid, || render::association(row, self.home.as_deref()))).collect()
    }

    async fn get_submission_set_and_contents(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        let store = &self.registry.store;
        let sets = match params.exactly_one("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId")? {
            (Some(uuid), _) => store.reg_submission_sets_by_uuid(&canonical_uuids(vec![uuid])).await?,
            (_, Some(unique_id)) => store.reg_submission_sets_by_unique_id(&[unique_id]).await?,
            (None, None) => Vec::new(),
        };
        let Some(submission_set) = sets.first() else {
            return Ok(Vec::new());
        };
        let format_codes = params.codes("$XDSDocumentEntryFormatCode")?;
        let confidentiality_codes = params.code_groups("$XDSDocumentEntryConfidentialityCode")?;
        let object_types = params.list("$XDSDocumentEntryType");
        let has_member = [ASSOCIATION_HAS_MEMBER.to_owned()];
        let ceiling = self.max_results() + 1;
        let members = store
            .reg_associations(
                std::slice::from_ref(&submission_set.entry_uuid),
                AssociationEnd::Source,
                &has_member,
                ceiling,
            )
            .await?;
        self.cap(members.len())?;
        let targets: Vec<String> = members.iter().map(|association| association.target_uuid.clone()).collect();
        let documents = store.reg_documents_by_uuid(&targets).await?;
        let folders = store.reg_folders_by_uuid(&targets).await?;
        let folder_uuids: Vec<String> = folders.iter().map(|folder| folder.entry_uuid.clone()).collect();
        let target_set: HashSet<&str> = targets.iter().map(String::as_str).collect();
        let folder_members: Vec<_> = store
            .reg_associations(&folder_uuids, AssociationEnd::Source, &has_member, ceiling)
            .await?
            .into_iter()
            .filter(|association| target_set.contains(association.entry_uuid.as_str()))
            .collect();

        let mut kept_documents = Vec::new();
        for row in &documents {
            let rendered = render::document(row, self.home.as_deref())?;
            if matches_contents_filter(row, &rendered, &format_codes, &confidentiality_codes, &object_types) {
                kept_documents.push((row, rendered));
            }
        }
        let dropped: HashSet<&str> = documents
            .iter()
            .map(|row| row.entry_uuid.as_str())
            .filter(|uuid| !kept_documents.iter().any(|(row, _)| row.entry_uuid == *uuid))
            .collect();
        let kept_members: Vec<_> = members
            .iter()
            .chain(folder_members.iter())
            .filter(|association| !dropped.contains(association.target_uuid.as_str()))
            .collect();
        self.cap(1 + kept_documents.len() + folders.len() + kept_members.len())?;

        let mut objects = vec![
            self.object(&submission_set.entry_uuid, || render::submission_set(submission_set, self.home.as_deref()))?,
        ];
        for (row, rendered) in kept_documents {
            objects.push(if self.leaf_class {
                rendered
            } else {
                render::object_ref(&row.entry_uuid, self.home.as_deref())
            });
        }
        for row in &folders {
            objects.push(self.object(&row.entry_uuid, || render::folder(row, self.home.as_deref()))?);
        }
        for row in kept_members {
            objects.push(self.object(&row.entry_uuid, || render::association(row, self.home.as_deref()))?);
        }
        Ok(objects)
    }

    async fn get_related_documents(&self, params: &Params<'_>) -> Result<Vec<RegistryObject>, Failure> {
        let types = params.required_list("$AssociationTypes")?;
        let object_types = params.list("$XDSDocumentEntryType");
        let origins = self.documents_by_id(params, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId").await?;
        if origins.is_empty() {
            return Ok(Vec::new());
        }
        let origin_uuids: Vec<String> = origins.iter().map(|row| row.entry_uuid.clone()).collect();
        let associations = self
            .registry
            .store
            .reg_associations(&origin_uuids, AssociationEnd::Either, &types, self.max_results() + 1)
            .await?;
        if associations.is_empty() {
            // ITI TF-2a 3.18.4.1.2.3.7.13: no related documents, an empty answer.
            return Ok(Vec::new());
        }
        let origin_set: HashSet<&str> = origin_uuids.iter().map(String::as_str).collect();
        let related_uuids: Vec<String> = associations
            .iter()
            .flat_map(|association| [association.source_uuid.clone(), association.target_uuid.clone()])
            .filter(|uuid| !origin_set.contains(uuid.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let related: Vec<DocumentRow> = self
            .registry
            .store
            .reg_documents_by_uuid(&related_uuids)
            .await?
            .into_iter()
            .filter(|row| object_types.is_empty() || object_types.contains(&row.object_type))
            .collect();
        let related_set: HashSet<&str> = related.iter().map(|row| row.entry_uuid.as_str()).collect();
        let kept: Vec<_> = associations
            .iter()
            .filter(|association| {
                related_set.contains(association.source_uuid.as_str())
                    || related_set.contains(association.target_uuid.as_str())
            })
            .collect();
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        self.cap(origins.len() + related.len() + kept.len())?;
        let mut objects = self.documents(&origins)?;
        objects.extend(self.documents(&related)?);
        for row in kept {
            objects.push(self.object(&row.entry_uuid, || render::association(row, self.home.as_deref()))?);
        }
        Ok(objects)
    }

    /// The canonical patient of a required patientId parameter; `None` when it cannot match
    /// (another affinity domain).
    fn patient(&self, params: &Params<'_>, name: &str) -> Result<Option<String>, Failure> {
        let value = params.required_single(name)?;
        match ids::canonical_patient_id(&value, &self.registry.config.patient_id_authority) {
            Ok(patient_id) => Ok(Some(patient_id)),
            Err(PatientIdProblem::OtherDomain) => Ok(None),
            Err(PatientIdProblem::Malformed) => Err(Violation::Parameter {
                parameter: name.to_owned(),
                problem: "is not a CX id^^^&OID&ISO".to_owned(),
            }
            .into()),
        }
    }

    async fn documents_by_id(
        &self,
        params: &Params<'_>,
        by_uuid: &str,
        by_unique_id: &str,
    ) -> Result<Vec<DocumentRow>, Failure> {
        let uuids = params.list(by_uuid);
        let unique_ids = params.list(by_unique_id);
        match (uuids.is_empty(), unique_ids.is_empty()) {
            (false, true) => Ok(self.registry.store.reg_documents_by_uuid(&canonical_uuids(uuids)).await?),
            (true, false) => Ok(self.registry.store.reg_documents_by_unique_id(&unique_ids).await?),
            (true, true) => {
                Err(Violation::MissingParameter { parameter: format!("{by_uuid} or {by_unique_id}") }.into())
            }
            (false, false) => Err(Violation::ParameterNumber {
                parameter: format!("{by_uuid} and {by_unique_id}"),
                problem: "give one of them, not both",
            }
            .into()),
        }
    }

    fn documents(&self, rows: &[DocumentRow]) -> Result<Vec<RegistryObject>, Failure> {
        rows.iter().map(|row| self.object(&row.entry_uuid, || render::document(row, self.home.as_deref()))).collect()
    }

    /// The object itself (LeafClass) or a reference to it (ObjectRef).
    fn object(
        &self,
        uuid: &str,
        render: impl FnOnce() -> Result<RegistryObject, hie_store::StoreError>,
    ) -> Result<RegistryObject, Failure> {
        if self.leaf_class { Ok(render()?) } else { Ok(render::object_ref(uuid, self.home.as_deref())) }
    }
}

fn matches_contents_filter(
    row: &DocumentRow,
    rendered: &RegistryObject,
    format_codes: &[CodeMatch],
    confidentiality_codes: &[Vec<CodeMatch>],
    object_types: &[String],
) -> bool {
    let RegistryObject::DocumentEntry(entry) = rendered else {
        return false;
    };
    let code_matches = |code: &Code, wanted: &CodeMatch| {
        code.code == wanted.code && wanted.scheme.as_ref().is_none_or(|scheme| *scheme == code.scheme)
    };
    let format_ok = format_codes.is_empty()
        || entry.format_code.as_ref().is_some_and(|code| format_codes.iter().any(|wanted| code_matches(code, wanted)));
    let confidentiality_ok = confidentiality_codes.iter().all(|group| {
        group.iter().any(|wanted| entry.confidentiality_codes.iter().any(|code| code_matches(code, wanted)))
    });
    let type_ok = object_types.is_empty() || object_types.contains(&row.object_type);
    format_ok && confidentiality_ok && type_ok
}

fn canonical_uuids(values: Vec<String>) -> Vec<String> {
    values.into_iter().map(|value| ids::canonical_uuid(&value).unwrap_or(value)).collect()
}

/// The parameters of one query, checked against what the query defines.
struct Params<'a> {
    slots: &'a [Slot],
}

impl<'a> Params<'a> {
    fn new(request: &'a AdhocQueryRequest, allowed: &[&str]) -> Result<Params<'a>, Failure> {
        let unknown: Vec<Violation> = request
            .parameters
            .iter()
            .filter(|slot| !allowed.contains(&slot.name.as_str()) && slot.name != PARAM_HOME_COMMUNITY_ID)
            .map(|slot| Violation::Parameter {
                parameter: slot.name.clone(),
                problem: "is not a parameter of this stored query".to_owned(),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(Failure::Refused(unknown));
        }
        Ok(Params { slots: &request.parameters })
    }

    /// The values of each Slot named `name`.
    fn groups(&self, name: &str) -> Vec<Vec<String>> {
        self.slots
            .iter()
            .filter(|slot| slot.name == name)
            .map(|slot| slot.values.iter().flat_map(|value| parse_query_values(value)).collect())
            .collect()
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.groups(name).into_iter().flatten().collect()
    }

    fn required_list(&self, name: &str) -> Result<Vec<String>, Failure> {
        let values = self.list(name);
        if values.is_empty() {
            return Err(Violation::MissingParameter { parameter: name.to_owned() }.into());
        }
        Ok(values)
    }

    fn single(&self, name: &str) -> Result<Option<String>, Failure> {
        let mut values = self.list(name);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(Violation::ParameterNumber { parameter: name.to_owned(), problem: "takes a single value" }.into()),
        }
    }

    fn required_single(&self, name: &str) -> Result<String, Failure> {
        self.single(name)?.ok_or_else(|| Violation::MissingParameter { parameter: name.to_owned() }.into())
    }

    /// Exactly one of two single-valued parameters.
    fn exactly_one(&self, first: &str, second: &str) -> Result<(Option<String>, Option<String>), Failure> {
        match (self.single(first)?, self.single(second)?) {
            (None, None) => Err(Violation::MissingParameter { parameter: format!("{first} or {second}") }.into()),
            (Some(_), Some(_)) => Err(Violation::ParameterNumber {
                parameter: format!("{first} and {second}"),
                problem: "give one of them, not both",
            }
            .into()),
            pair => Ok(pair),
        }
    }

    fn codes(&self, name: &str) -> Result<Vec<CodeMatch>, Failure> {
        self.list(name).iter().map(|value| code_match(name, value)).collect()
    }

    fn code_groups(&self, name: &str) -> Result<Vec<Vec<CodeMatch>>, Failure> {
        self.groups(name)
            .iter()
            .map(|group| group.iter().map(|value| code_match(name, value)).collect::<Result<Vec<_>, _>>())
            .collect()
    }

    fn range(&self, from: &str, to: &str) -> Result<TimeRange, Failure> {
        Ok(TimeRange { from: self.time(from)?, to: self.time(to)? })
    }

    fn time(&self, name: &str) -> Result<Option<String>, Failure> {
        let Some(value) = self.single(name)? else {
            return Ok(None);
        };
        match ids::padded_dtm(&value) {
            Some(padded) => Ok(Some(padded)),
            None => Err(Violation::Parameter { parameter: name.to_owned(), problem: "is not a DTM".to_owned() }.into()),
        }
    }
}

/// `code^^scheme` (ITI TF-2a 3.18.4.1.2.3.4): both parts required.
fn code_match(name: &str, value: &str) -> Result<CodeMatch, Failure> {
    match value.split_once("^^") {
        Some((code, scheme)) if !code.is_empty() && !scheme.is_empty() => {
            Ok(CodeMatch { code: code.to_owned(), scheme: Some(scheme.to_owned()) })
        }
        _ => Err(Violation::Parameter {
            parameter: name.to_owned(),
            problem: format!("{value:?} is not a coded value code^^scheme"),
        }
        .into()),
    }
}

/// `$homeCommunityId`, accepted by every query (ITI TF-2a 3.18.4.1.2.3.8).
const PARAM_HOME_COMMUNITY_ID: &str = "$homeCommunityId";

/// The parameters of each stored query (ITI TF-2a 3.18.4.1.2.3.7.1 to .13).
const FIND_DOCUMENTS: &[&str] = &[
    "$XDSDocumentEntryPatientId",
    "$XDSDocumentEntryClassCode",
    "$XDSDocumentEntryTypeCode",
    "$XDSDocumentEntryPracticeSettingCode",
    "$XDSDocumentEntryCreationTimeFrom",
    "$XDSDocumentEntryCreationTimeTo",
    "$XDSDocumentEntryServiceStartTimeFrom",
    "$XDSDocumentEntryServiceStartTimeTo",
    "$XDSDocumentEntryServiceStopTimeFrom",
    "$XDSDocumentEntryServiceStopTimeTo",
    "$XDSDocumentEntryHealthcareFacilityTypeCode",
    "$XDSDocumentEntryEventCodeList",
    "$XDSDocumentEntryConfidentialityCode",
    "$XDSDocumentEntryAuthorPerson",
    "$XDSDocumentEntryFormatCode",
    "$XDSDocumentEntryStatus",
    "$XDSDocumentEntryType",
];
const FIND_SUBMISSION_SETS: &[&str] = &[
    "$XDSSubmissionSetPatientId",
    "$XDSSubmissionSetSourceId",
    "$XDSSubmissionSetSubmissionTimeFrom",
    "$XDSSubmissionSetSubmissionTimeTo",
    "$XDSSubmissionSetAuthorPerson",
    "$XDSSubmissionSetContentType",
    "$XDSSubmissionSetStatus",
];
const GET_DOCUMENTS: &[&str] = &["$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"];
const GET_ASSOCIATIONS: &[&str] = &["$uuid"];
const GET_SUBMISSION_SET_AND_CONTENTS: &[&str] = &[
    "$XDSSubmissionSetEntryUUID",
    "$XDSSubmissionSetUniqueId",
    "$XDSDocumentEntryFormatCode",
    "$XDSDocumentEntryConfidentialityCode",
    "$XDSDocumentEntryType",
];
const GET_RELATED_DOCUMENTS: &[&str] =
    &["$XDSDocumentEntryUniqueId", "$XDSDocumentEntryEntryUUID", "$AssociationTypes", "$XDSDocumentEntryType"];
