//! Issue 4 end to end, with a real Orthanc as the PACS (DICOMweb, polled; and once by DIMSE) and the
//! built-in registry over mutual TLS, on both store engines:
//! ADT, then a study: it is published, and ITI-18 FindDocuments for the affinity-domain patient
//! returns its manifest with the right metadata; a second series arrives and the manifest is
//! replaced (RPLC, version 1 Deprecated); the study is deleted in Orthanc and the manifest
//! deprecated (ITI-57). Every request the broker recorded and every answer the registry gave
//! (to the broker and to curl) passes xmllint against the IHE schemas.

use hie_e2e::Engine;
use hie_testkit::Orthanc;
use serde_json::Value;

use crate::publishing::*;

fn flow(engine: Engine, link: PacsLink) {
    let orthanc = Orthanc::start();
    let broker = publishing_broker_via(engine, link, &orthanc, &[]);
    let registry = Registry::of(&broker);
    let dir = tempfile::tempdir().expect("temp dir");
    let patient = Patient::new("FLOW");
    let accession = format!("ACC{}", &hie_e2e::unique_suffix()[..10]);

    send_adt(&broker, &patient.adt("A04", true));
    let study = study_for(&patient, &accession, 4, None, &dir.path().join("v1"));
    let uid = study.study_instance_uid.clone();
    orthanc.upload_all(&study.paths());

    // Version 1.
    let rows = wait_submissions(&broker, &uid, "version 1 published", |rows| {
        rows.len() == 1 && text(&rows[0], "state") == "done"
    });
    let v1 = &rows[0];
    assert_eq!((text(v1, "kind").as_str(), v1["manifest_version"].as_i64()), ("publish", Some(1)), "{v1:#}");
    assert_eq!(v1["attempts"], 1, "published at the first attempt: {:#}", without_exchange(v1));
    let kos1 = manifest_bytes(&broker, &format!("/api/studies/{uid}/manifests/1"));
    assert_eq!(
        manifest_bytes(&broker, &format!("/api/studies/{uid}/manifest")),
        kos1,
        "the latest manifest is version 1"
    );
    let v1_unique_id = sop_instance_uid(&kos1);
    assert_eq!(text(v1, "document_unique_id"), v1_unique_id, "uniqueId = the KOS SOP Instance UID");
    assert_recorded_exchange_valid(v1, Some(&kos1), "ITI-41 of version 1");
    let request = text(v1, "request");
    assert!(
        request.contains("ProvideAndRegisterDocumentSetRequest") && request.contains("xop:Include"),
        "the recorded ITI-41 is its MTOM root part: {request}"
    );
    assert_phi_masked(&broker, &uid, &patient);

    let found = registry.find_documents(&patient.ad_cx());
    found.assert_success();
    found.assert_schema_valid("FindDocuments after version 1");
    let documents = found.documents();
    assert_eq!(documents.len(), 1, "one DocumentEntry for the patient: {:#}", found.summary);
    let entry = &documents[0];
    assert_entry(entry, &patient, &uid, &accession, &kos1);
    assert_eq!(entry["status"], STATUS_APPROVED);
    let v1_entry_uuid = entry["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(text(v1, "registry_entry_uuid"), v1_entry_uuid, "{v1:#}");

    // A second series: version 2 replaces version 1.
    let later = study_for(&patient, &accession, 2, Some(&uid), &dir.path().join("v2"));
    orthanc.upload_all(&later.paths());
    let rows = wait_submissions(&broker, &uid, "version 2 published", |rows| {
        rows.len() == 2 && text(&rows[1], "state") == "done"
    });
    let v2 = &rows[1];
    assert_eq!(v2["manifest_version"], 2, "{:#}", without_exchange(v2));
    assert_eq!(text(v2, "replaced_unique_id"), v1_unique_id, "{:#}", without_exchange(v2));
    let kos2 = manifest_bytes(&broker, &format!("/api/studies/{uid}/manifests/2"));
    let v2_unique_id = sop_instance_uid(&kos2);
    assert_ne!(v2_unique_id, v1_unique_id);
    assert_eq!(text(v2, "document_unique_id"), v2_unique_id);
    assert_recorded_exchange_valid(v2, Some(&kos2), "ITI-41 of version 2");
    let detail = broker.get_json(&format!("/api/studies/{uid}"));
    assert_eq!(detail["manifests"][1]["n_instances"], 6, "both series referenced: {detail:#}");
    assert_eq!(detail["manifests"][1]["n_series"], 2, "{detail:#}");

    let found = registry.find_documents(&patient.ad_cx());
    found.assert_success();
    found.assert_schema_valid("FindDocuments after version 2");
    let documents = found.documents();
    assert_eq!(documents.len(), 2, "{:#}", found.summary);
    let by_unique_id = |unique_id: &str| -> Value {
        documents
            .iter()
            .find(|document| external_id(document, DOCUMENT_UNIQUE_ID) == unique_id)
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {unique_id}: {:#}", found.summary))
    };
    let (old, new) = (by_unique_id(&v1_unique_id), by_unique_id(&v2_unique_id));
    assert_eq!(old["status"], STATUS_DEPRECATED, "version 1 deprecated by the RPLC");
    assert_eq!(new["status"], STATUS_APPROVED);
    assert_entry(&new, &patient, &uid, &accession, &kos2);
    let v2_entry_uuid = new["id"].as_str().unwrap_or_default().to_owned();

    let associations = registry.get_associations(&v2_entry_uuid);
    associations.assert_success();
    associations.assert_schema_valid("GetAssociations of version 2");
    let replacements: Vec<Value> = associations
        .associations()
        .into_iter()
        .filter(|association| association["associationType"] == ASSOCIATION_RPLC)
        .collect();
    assert_eq!(replacements.len(), 1, "{:#}", associations.summary);
    assert_eq!(replacements[0]["sourceObject"], v2_entry_uuid.as_str());
    assert_eq!(replacements[0]["targetObject"], v1_entry_uuid.as_str(), "RPLC targets version 1's entryUUID");

    let related = registry.get_related_documents(&v2_unique_id, &[ASSOCIATION_RPLC]);
    related.assert_success();
    related.assert_schema_valid("GetRelatedDocuments of version 2");
    let related_ids: Vec<String> =
        related.documents().iter().map(|document| document["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(related_ids.contains(&v1_entry_uuid), "version 1 is related by RPLC: {:#}", related.summary);

    // The study is deleted: the manifest is deprecated (ITI-57).
    orthanc.delete_study(&uid).expect("delete the study in Orthanc");
    let rows = wait_submissions(&broker, &uid, "the deprecation done", |rows| {
        rows.len() == 3 && text(&rows[2], "state") == "done"
    });
    let deprecation = &rows[2];
    assert_eq!(text(deprecation, "kind"), "deprecate", "{:#}", without_exchange(deprecation));
    assert_eq!(text(deprecation, "note"), format!("deprecated {v2_unique_id}"));
    assert_eq!(text(deprecation, "registry_entry_uuid"), v2_entry_uuid);
    assert_recorded_exchange_valid(deprecation, None, "ITI-57");
    assert!(text(deprecation, "request").contains(STATUS_DEPRECATED), "an UpdateAvailabilityStatus to Deprecated");
    assert_eq!(broker.get_json(&format!("/api/studies/{uid}"))["state"], "gone");

    let got = registry.get_documents(&[&v1_unique_id, &v2_unique_id]);
    got.assert_success();
    got.assert_schema_valid("GetDocuments after the deletion");
    let documents = got.documents();
    assert_eq!(documents.len(), 2, "{:#}", got.summary);
    assert!(documents.iter().all(|document| document["status"] == STATUS_DEPRECATED), "{:#}", got.summary);
    let approved = registry.query(
        FIND_DOCUMENTS,
        &[
            ("$XDSDocumentEntryPatientId", format!("'{}'", patient.ad_cx())),
            ("$XDSDocumentEntryStatus", format!("('{STATUS_APPROVED}')")),
        ],
    );
    approved.assert_success();
    assert_eq!(approved.documents().len(), 0, "nothing Approved is left: {:#}", approved.summary);
}

/// The DocumentEntry of a manifest version says what issue 4 and the profile prescribe.
fn assert_entry(entry: &Value, patient: &Patient, study: &str, accession: &str, kos: &[u8]) {
    let context = format!("{entry:#}");
    assert_eq!(entry["objectType"], STABLE_DOCUMENT, "{context}");
    assert_eq!(entry["mimeType"], "application/dicom", "{context}");
    assert_eq!(external_id(entry, DOCUMENT_PATIENT_ID), patient.ad_cx(), "patientId = the AD ID: {context}");
    assert_eq!(external_id(entry, DOCUMENT_UNIQUE_ID), sop_instance_uid(kos), "{context}");
    assert_eq!(slot(entry, "sourcePatientId"), vec![patient.local_cx()], "{context}");
    let info = slot(entry, "sourcePatientInfo");
    for expected in [
        format!("PID-3|{}", patient.local_cx()),
        format!("PID-5|{}", patient.name),
        "PID-7|19780324".to_owned(),
        "PID-8|M".to_owned(),
    ] {
        assert!(info.contains(&expected), "sourcePatientInfo lacks {expected}: {info:?}");
    }
    assert_eq!(codes(entry, SCHEME_CLASS_CODE), ["IMAGES^1.3.6.1.4.1.19376.1.2.6.1"], "{context}");
    // No procedure code in the images: the profile's type_code_default.
    assert_eq!(codes(entry, SCHEME_TYPE_CODE), ["18748-4^2.16.840.1.113883.6.1"], "{context}");
    assert_eq!(codes(entry, SCHEME_FORMAT_CODE), ["1.2.840.10008.5.1.4.1.1.88.59^1.2.840.10008.2.6.1"], "{context}");
    // The study's modality (PT, DICOM CID 29); its body part (LUNG) is not mapped by the profile.
    assert_eq!(codes(entry, SCHEME_EVENT_CODE), ["PT^1.2.840.10008.2.16.4"], "{context}");
    assert_eq!(codes(entry, SCHEME_CONFIDENTIALITY_CODE), ["N^2.16.840.1.113883.5.25"], "{context}");
    assert_eq!(codes(entry, SCHEME_FACILITY_TYPE_CODE), ["22232009^2.16.840.1.113883.6.96"], "{context}");
    assert_eq!(codes(entry, SCHEME_PRACTICE_SETTING_CODE), ["309964003^2.16.840.1.113883.6.96"], "{context}");
    assert_eq!(
        slot(entry, "urn:ihe:iti:xds:2013:referenceIdList"),
        [
            format!("{accession}^^^&{ACCESSION_ISSUER}&ISO^urn:ihe:iti:xds:2013:accession"),
            format!("{study}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"),
        ],
        "{context}"
    );
    // The repository sets these (ITI-41): the manifest's own hash and size.
    assert_eq!(slot(entry, "hash"), [sha1_hex(kos)], "{context}");
    assert_eq!(slot(entry, "size"), [kos.len().to_string()], "{context}");
    assert_eq!(slot(entry, "repositoryUniqueId"), [BUILTIN_REPOSITORY], "{context}");
    assert_eq!(slot(entry, "languageCode"), ["en-US"], "{context}");
    assert!(slot(entry, "serviceStartTime").first().is_some_and(|time| time.starts_with("20150324")), "{context}");
}

/// Without `phi=true` the recorded exchange keeps its structure but not the patient's identifiers.
fn assert_phi_masked(broker: &hie_e2e::BrokerProc, study: &str, patient: &Patient) {
    let (status, body) = broker.get(&format!("/api/submissions?study={study}"));
    assert_eq!(status, 200, "{body}");
    for secret in [patient.mrn.as_str(), patient.ad_id.as_deref().unwrap_or_default(), "FLOW^Pat"] {
        assert!(!body.contains(secret), "{secret} shown without phi=true: {body}");
    }
    assert!(body.contains("ProvideAndRegisterDocumentSetRequest"), "{body}");
}

#[test]
fn sqlite() {
    flow(Engine::Sqlite, PacsLink::DicomWeb);
}

#[test]
fn postgres() {
    flow(Engine::Postgres, PacsLink::DicomWeb);
}

/// The same through the DIMSE adapter (C-FIND queries and polls).
#[test]
fn sqlite_dimse() {
    flow(Engine::Sqlite, PacsLink::Dimse);
}
