//! Which content item value type a referenced instance gets in the manifest (TID 2010 row 5:
//! IMAGE, WAVEFORM or COMPOSITE), decided from its SOP class alone.
//!
//! | SOP classes | value type |
//! |---|---|
//! | every Storage SOP class PS3.4 Annex B names "... Image Storage" (75 in the 2025 dictionary), plus Enhanced US Volume Storage (`…1.6.2`) and Parametric Map Storage (`…1.30`), whose IODs carry the Image Pixel module | IMAGE |
//! | the Waveform IODs: `1.2.840.10008.5.1.4.1.1.9.<n>.<m>` except the waveform presentation states `…9.100.*`, plus Ultrasound Waveform Storage (`…1.601.5`) | WAVEFORM |
//! | everything else: SR, KOS, presentation states, RT objects, segmentations, encapsulated documents, raw data, unknown or private classes | COMPOSITE |
//!
//! dcm4chee-arc fixed the same decision in its issue #1180 (manifests that referenced every object
//! as IMAGE); COMPOSITE is always a legal fallback for a composite object.

/// DICOM PS3.3 C.17.3.2.1 value types used by a Key Object Selection document's references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    /// `IMAGE`: an image instance.
    Image,
    /// `WAVEFORM`: a waveform instance.
    Waveform,
    /// `COMPOSITE`: any other composite instance.
    Composite,
}

impl ValueType {
    /// The value type for a reference to an instance of `sop_class_uid`.
    pub fn for_sop_class(sop_class_uid: &str) -> ValueType {
        if IMAGE_SOP_CLASSES.binary_search(&sop_class_uid).is_ok() {
            ValueType::Image
        } else if is_waveform(sop_class_uid) {
            ValueType::Waveform
        } else {
            ValueType::Composite
        }
    }

    /// The Value Type (0040,A040) code string.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Image => "IMAGE",
            ValueType::Waveform => "WAVEFORM",
            ValueType::Composite => "COMPOSITE",
        }
    }
}

fn is_waveform(sop_class_uid: &str) -> bool {
    let family = sop_class_uid.strip_prefix(WAVEFORM_FAMILY).is_some_and(|rest| {
        // `…9.<n>.<m>`: two more components; `…9.100.*` are presentation states.
        let mut components = rest.split('.');
        matches!((components.next(), components.next(), components.next()), (Some(n), Some(_), None) if n != "100")
    });
    family || sop_class_uid == ULTRASOUND_WAVEFORM_STORAGE
}

/// Prefix of the Waveform Storage SOP classes (PS3.4 B.5, Waveform family).
const WAVEFORM_FAMILY: &str = "1.2.840.10008.5.1.4.1.1.9.";
/// Ultrasound Waveform Storage, outside the `…9.` family.
const ULTRASOUND_WAVEFORM_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.601.5";

/// Image Storage SOP classes, sorted bytewise for binary search (generated from
/// dicom-dictionary-std 0.10.1 `uids.rs`, every SOP class named "... Image Storage", plus the two
/// image IODs named otherwise; a test checks the order).
const IMAGE_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.1.29",           // Hardcopy Grayscale Image Storage SOP Class (Retired)
    "1.2.840.10008.5.1.1.30",           // Hardcopy Color Image Storage SOP Class (Retired)
    "1.2.840.10008.5.1.4.1.1.1",        // Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",      // Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",    // Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2",      // Digital Mammography X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",    // Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3",      // Digital Intra-Oral X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",    // Digital Intra-Oral X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.12.1",     // X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.1.1",   // Enhanced XA Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2",     // X-Ray Radiofluoroscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2.1",   // Enhanced XRF Image Storage
    "1.2.840.10008.5.1.4.1.1.12.3",     // X-Ray Angiographic Bi-Plane Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.128",      // Positron Emission Tomography Image Storage
    "1.2.840.10008.5.1.4.1.1.128.1",    // Legacy Converted Enhanced PET Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.1",   // X-Ray 3D Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.2",   // X-Ray 3D Craniofacial Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.3",   // Breast Tomosynthesis Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.4",   // Breast Projection X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.13.1.5",   // Breast Projection X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.130",      // Enhanced PET Image Storage
    "1.2.840.10008.5.1.4.1.1.14.1",     // Intravascular Optical Coherence Tomography Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.14.2",     // Intravascular Optical Coherence Tomography Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.2",        // CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",      // Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",      // Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.3",      // CT Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.2.4",      // Enhanced CT Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.2.5",      // Legacy Converted Enhanced CT Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.20",       // Nuclear Medicine Image Storage
    "1.2.840.10008.5.1.4.1.1.3",        // Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.3.1",      // Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.30",       // Parametric Map Storage
    "1.2.840.10008.5.1.4.1.1.4",        // MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",      // Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",      // Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",      // Legacy Converted Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.481.1",    // RT Image Storage
    "1.2.840.10008.5.1.4.1.1.481.23",   // Enhanced RT Image Storage
    "1.2.840.10008.5.1.4.1.1.481.24",   // Enhanced Continuous RT Image Storage
    "1.2.840.10008.5.1.4.1.1.5",        // Nuclear Medicine Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.501.1",    // DICOS CT Image Storage
    "1.2.840.10008.5.1.4.1.1.501.2.1",  // DICOS Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.501.2.2",  // DICOS Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.6",        // Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.6.1",      // Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.6.2",      // Enhanced US Volume Storage
    "1.2.840.10008.5.1.4.1.1.6.3",      // Photoacoustic Image Storage
    "1.2.840.10008.5.1.4.1.1.601.1",    // Eddy Current Image Storage
    "1.2.840.10008.5.1.4.1.1.601.2",    // Eddy Current Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.601.3",    // Thermography Image Storage
    "1.2.840.10008.5.1.4.1.1.601.4",    // Thermography Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.7",        // Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",      // Multi-frame Single Bit Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",      // Multi-frame Grayscale Byte Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.3",      // Multi-frame Grayscale Word Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.4",      // Multi-frame True Color Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1",     // VL Image Storage - Trial (Retired)
    "1.2.840.10008.5.1.4.1.1.77.1.1",   // VL Endoscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", // Video Endoscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.2",   // VL Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.2.1", // Video Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.3",   // VL Slide-Coordinates Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4",   // VL Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1", // Video Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.1", // Ophthalmic Photography 8 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.2", // Ophthalmic Photography 16 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.4", // Ophthalmic Tomography Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.5", // Wide Field Ophthalmic Photography Stereographic Projection Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.6", // Wide Field Ophthalmic Photography 3D Coordinates Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.7", // Ophthalmic Optical Coherence Tomography En Face Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.6",   // VL Whole Slide Microscopy Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.7",   // Dermoscopic Photography Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.8",   // Confocal Microscopy Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.9",   // Confocal Microscopy Tiled Pyramidal Image Storage
    "1.2.840.10008.5.1.4.1.1.77.2",     // VL Multi-frame Image Storage - Trial (Retired)
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(IMAGE_SOP_CLASSES.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn mapping() {
        use ValueType::*;
        let cases = [
            ("1.2.840.10008.5.1.4.1.1.4", Image),           // MR
            ("1.2.840.10008.5.1.4.1.1.128", Image),         // PET
            ("1.2.840.10008.5.1.4.1.1.2.1", Image),         // Enhanced CT
            ("1.2.840.10008.5.1.4.1.1.7", Image),           // Secondary Capture
            ("1.2.840.10008.5.1.4.1.1.77.1.6", Image),      // VL Whole Slide Microscopy
            ("1.2.840.10008.5.1.4.1.1.6.2", Image),         // Enhanced US Volume
            ("1.2.840.10008.5.1.4.1.1.9.1.1", Waveform),    // 12-lead ECG
            ("1.2.840.10008.5.1.4.1.1.9.4.1", Waveform),    // Basic Voice Audio
            ("1.2.840.10008.5.1.4.1.1.601.5", Waveform),    // Ultrasound Waveform
            ("1.2.840.10008.5.1.4.1.1.9.100.1", Composite), // Waveform Presentation State
            ("1.2.840.10008.5.1.4.1.1.9", Composite),       // Standalone Curve (retired)
            ("1.2.840.10008.5.1.4.1.1.88.59", Composite),   // KOS
            ("1.2.840.10008.5.1.4.1.1.88.22", Composite),   // Enhanced SR
            ("1.2.840.10008.5.1.4.1.1.11.1", Composite),    // GSPS
            ("1.2.840.10008.5.1.4.1.1.66.4", Composite),    // Segmentation
            ("1.2.840.10008.5.1.4.1.1.104.1", Composite),   // Encapsulated PDF
            ("1.2.3.4.5", Composite),                       // private
        ];
        for (uid, expected) in cases {
            assert_eq!(ValueType::for_sop_class(uid), expected, "{uid}");
        }
    }
}
