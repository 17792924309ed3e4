//! Registry rows back to ebRIM objects for LeafClass answers: the registered object as stored,
//! with what the registry keeps current laid over it (status, version, lid, patientId after a
//! merge, Folder lastUpdateTime) and the `home` attribute of the community when configured.

use hie_store::StoreError;
use hie_store::refregistry::{AssociationRow, DocumentRow, FolderRow, SubmissionSetRow};
use hie_xds::RegistryObject;
use hie_xds::ebrim::read_registry_object_list;
use hie_xds::vocabulary::NS_RIM;
use hie_xds::xml::{self, Limits};

/// A DocumentEntry as the registry holds it now.
pub(crate) fn document(row: &DocumentRow, home: Option<&str>) -> Result<RegistryObject, StoreError> {
    let mut object = parse(&row.ebrim, &row.entry_uuid)?;
    if let RegistryObject::DocumentEntry(entry) = &mut object {
        entry.status = Some(row.status.clone());
        entry.lid = Some(row.lid.clone());
        entry.version = Some(row.version.to_string());
        entry.patient_id = Some(row.patient_id.clone());
        entry.home = home.map(str::to_owned);
        return Ok(object);
    }
    Err(corrupt(&row.entry_uuid))
}

/// A SubmissionSet as the registry holds it now.
pub(crate) fn submission_set(row: &SubmissionSetRow, home: Option<&str>) -> Result<RegistryObject, StoreError> {
    let mut object = parse(&row.ebrim, &row.entry_uuid)?;
    if let RegistryObject::SubmissionSet(submission_set) = &mut object {
        submission_set.status = Some(row.status.clone());
        submission_set.version = Some(FIRST_VERSION.to_owned());
        submission_set.patient_id = Some(row.patient_id.clone());
        submission_set.home = home.map(str::to_owned);
        return Ok(object);
    }
    Err(corrupt(&row.entry_uuid))
}

/// A Folder as the registry holds it now.
pub(crate) fn folder(row: &FolderRow, home: Option<&str>) -> Result<RegistryObject, StoreError> {
    let mut object = parse(&row.ebrim, &row.entry_uuid)?;
    if let RegistryObject::Folder(folder) = &mut object {
        folder.status = Some(row.status.clone());
        folder.version = Some(row.version.to_string());
        folder.patient_id = Some(row.patient_id.clone());
        folder.last_update_time = Some(row.last_update_time.clone());
        folder.home = home.map(str::to_owned);
        return Ok(object);
    }
    Err(corrupt(&row.entry_uuid))
}

/// An Association as the registry holds it now.
pub(crate) fn association(row: &AssociationRow, home: Option<&str>) -> Result<RegistryObject, StoreError> {
    let mut object = parse(&row.ebrim, &row.entry_uuid)?;
    if let RegistryObject::Association(association) = &mut object {
        association.status = Some(row.status.clone());
        association.home = home.map(str::to_owned);
        return Ok(object);
    }
    Err(corrupt(&row.entry_uuid))
}

/// An ObjectRef to `id`.
pub(crate) fn object_ref(id: &str, home: Option<&str>) -> RegistryObject {
    RegistryObject::ObjectRef { id: id.to_owned(), home: home.map(str::to_owned) }
}

fn parse(ebrim: &str, id: &str) -> Result<RegistryObject, StoreError> {
    // The stored XML is one object with an undeclared rim: prefix, as a RegistryObjectList holds it.
    let wrapped = format!("<rim:RegistryObjectList xmlns:rim=\"{NS_RIM}\">{ebrim}</rim:RegistryObjectList>");
    let document = xml::parse(wrapped.as_bytes(), &Limits::DEFAULT).map_err(|_| corrupt(id))?;
    let mut objects = read_registry_object_list(document.root()).map_err(|_| corrupt(id))?;
    match objects.len() {
        1 => Ok(objects.remove(0)),
        _ => Err(corrupt(id)),
    }
}

fn corrupt(id: &str) -> StoreError {
    StoreError::Corrupt(format!("the stored ebRIM of registry object {id} does not read back"))
}

/// VersionInfo of an object that has no versions (SubmissionSets, ITI TF-3 4.1.4).
const FIRST_VERSION: &str = "1";
