//! The fixture studies, kept (with their provenance) in `crates/hie-kos/test_data/studies/`:
//! real multi-vendor files that are not all IOD-clean, which is the point.

use std::path::{Path, PathBuf};

/// One fixture study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureStudy {
    /// Folder name under `studies/`.
    pub name: &'static str,
    pub patient_id: &'static str,
    pub study_instance_uid: &'static str,
    /// Images (the manifest `kos.dcm`, where there is one, is not counted).
    pub n_images: usize,
    /// Series the images are in.
    pub n_series: usize,
    /// Subfolder holding the images ("" for the study folder itself).
    images_folder: &'static str,
}

/// NIST IDS-DEPT002-a: MR, 36 images in 2 series, Explicit VR Little Endian.
pub const IDS_DEPT002_A: FixtureStudy = FixtureStudy {
    name: "IDS-DEPT002-a",
    patient_id: "IDS-DEPT002-a",
    study_instance_uid: "1.3.6.1.4.1.21367.201599.1.201604020954059",
    n_images: 36,
    n_series: 2,
    images_folder: "images",
};

/// NIST IDS-DEPT024-a: PET, 10 images in 1 series, Explicit VR Little Endian (about 40 KB each).
pub const IDS_DEPT024_A: FixtureStudy = FixtureStudy {
    name: "IDS-DEPT024-a",
    patient_id: "IDS-DEPT024-a",
    study_instance_uid: "1.3.6.1.4.1.21367.201599.1.201604020956016",
    n_images: 10,
    n_series: 1,
    images_folder: "images",
};

/// dcm4che's MR series: 16 slices, Implicit VR Little Endian, no manifest.
pub const DCM4CHE_MR_SERIES: FixtureStudy = FixtureStudy {
    name: "dcm4che-MR-series",
    patient_id: "583295",
    study_instance_uid: "1.113654.3.13.1026",
    n_images: 16,
    n_series: 1,
    images_folder: "",
};

impl FixtureStudy {
    /// The study's folder.
    pub fn dir(&self) -> PathBuf {
        studies_dir().join(self.name)
    }

    /// The image files, sorted by name.
    pub fn images(&self) -> Vec<PathBuf> {
        let folder = self.dir().join(self.images_folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("fixture folder {}: {error}", folder.display()))
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "dcm") && path.file_name() != Some("kos.dcm".as_ref())
            })
            .collect();
        files.sort();
        assert_eq!(files.len(), self.n_images, "fixture {} changed", self.name);
        files
    }

    /// The NIST manifest of the study, if it has one.
    pub fn kos(&self) -> Option<PathBuf> {
        Some(self.dir().join("kos.dcm")).filter(|path| path.exists())
    }
}

/// `crates/hie-kos/test_data/studies/`.
pub fn studies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies")
}

/// Every fixture study.
pub const ALL: &[FixtureStudy] = &[IDS_DEPT002_A, IDS_DEPT024_A, DCM4CHE_MR_SERIES];
