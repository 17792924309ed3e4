//! Every fixture study: evidence from its files, our manifest through dciodvfy and dsrdump, and
//! the same references and keys as the study's own NIST manifest.

use hie_kos::{ValueType, read_manifest, to_part10_bytes};

use crate::support::{assert_dciodvfy_clean, build, evidence_for, study_dirs};

#[test]
fn every_fixture_study_gives_a_valid_manifest_matching_the_fixture_kos() {
    let dirs = study_dirs();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    for dir in dirs {
        let label = dir.file_name().unwrap().to_string_lossy().into_owned();
        let evidence = evidence_for(&dir);
        let bytes = to_part10_bytes(&build(&evidence)).unwrap();
        assert_dciodvfy_clean(&label, &bytes);

        let ours = read_manifest(&bytes).unwrap();
        assert_eq!(ours.n_instances(), evidence.n_instances(), "{label}");
        assert_eq!(ours.content.len(), evidence.n_instances(), "{label}");
        println!(
            "{label}: {} series, {} instances, {} request(s)",
            evidence.series.len(),
            evidence.n_instances(),
            evidence.requests.len()
        );

        let fixture_kos = dir.join("kos.dcm");
        if fixture_kos.exists() {
            let theirs = read_manifest(&std::fs::read(&fixture_kos).unwrap()).unwrap();
            assert_eq!(ours.referenced(), theirs.referenced(), "{label}: referenced instances differ");
            assert_eq!(ours.study_instance_uid, theirs.study_instance_uid, "{label}");
            assert_eq!(ours.patient_id, theirs.patient_id, "{label}");
            assert_eq!(ours.accession_number, theirs.accession_number, "{label}");
            assert_eq!(ours.document_title, theirs.document_title, "{label}");
            // The NIST manifests use the same value types for these image classes.
            let value_types = |summary: &hie_kos::ManifestSummary| {
                summary
                    .content
                    .iter()
                    .map(|item| (item.instance.clone(), item.value_type.clone()))
                    .collect::<std::collections::BTreeSet<_>>()
            };
            assert_eq!(value_types(&ours), value_types(&theirs), "{label}");
        }
        for item in &ours.content {
            let instance = item.instance.as_ref().unwrap();
            assert_eq!(item.value_type, ValueType::for_sop_class(&instance.sop_class_uid).as_str());
        }
    }
}

#[test]
fn the_fixture_manifests_read_back() {
    let mut files: Vec<_> = std::fs::read_dir(crate::support::test_data().join("kos"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.extend(study_dirs().into_iter().map(|dir| dir.join("kos.dcm")).filter(|path| path.exists()));
    assert!(files.len() >= 7, "{files:?}");
    for file in files {
        let summary =
            read_manifest(&std::fs::read(&file).unwrap()).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        let title = summary.document_title.as_ref().unwrap();
        assert_eq!((title.value.as_str(), title.scheme.as_str()), ("113030", "DCM"), "{}", file.display());
        assert!(summary.n_instances() > 0, "{}", file.display());
        for series in &summary.series {
            assert!(series.retrieve_location_uid.is_some(), "{}", file.display());
        }
    }
}
