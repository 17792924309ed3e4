//! SOP class and transfer syntax UIDs the DIMSE layer negotiates, taken from
//! dicom-dictionary-std rather than typed, and the storage SOP classes offered with the SCP role
//! for C-GET (PS3.4 C.4.3, PS3.7 D.3.3.4 SCP/SCU role selection).

use dicom_dictionary_std::uids;

/// Verification SOP Class (PS3.4 A.4): C-ECHO.
pub const VERIFICATION: &str = uids::VERIFICATION;

/// Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
pub const STUDY_ROOT_FIND: &str = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
/// Study Root Query/Retrieve Information Model - GET.
pub const STUDY_ROOT_GET: &str = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
/// Study Root Query/Retrieve Information Model - MOVE.
pub const STUDY_ROOT_MOVE: &str = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
/// Patient Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1).
pub const PATIENT_ROOT_FIND: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
/// Patient Root Query/Retrieve Information Model - GET.
pub const PATIENT_ROOT_GET: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
/// Patient Root Query/Retrieve Information Model - MOVE.
pub const PATIENT_ROOT_MOVE: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;

/// Implicit VR Little Endian (PS3.5 10.1): the default transfer syntax every peer accepts.
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
/// Explicit VR Little Endian (PS3.5 A.2).
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;

/// Storage SOP classes proposed, with the SCP role, beside a C-GET presentation context: the
/// peer may only send what we proposed. An association carries at most 128 presentation contexts
/// (PS3.8 9.3.2.2: odd IDs 1 to 255), so this is the common subset (the classes Orthanc and
/// dcmtk's getscu propose by default, plus the document and SR classes a manifest references),
/// leaving room for the Q/R contexts.
pub const STORAGE_SOP_CLASSES: &[&str] = &[
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_INTRA_ORAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_COLOR_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
    uids::NUCLEAR_MEDICINE_IMAGE_STORAGE,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_SINGLE_BIT_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::ENHANCED_XA_IMAGE_STORAGE,
    uids::X_RAY_RADIOFLUOROSCOPIC_IMAGE_STORAGE,
    uids::ENHANCED_XRF_IMAGE_STORAGE,
    uids::X_RAY3_D_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::BREAST_TOMOSYNTHESIS_IMAGE_STORAGE,
    uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
    uids::ENHANCED_PET_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_PET_IMAGE_STORAGE,
    uids::RT_IMAGE_STORAGE,
    uids::RT_DOSE_STORAGE,
    uids::RT_STRUCTURE_SET_STORAGE,
    uids::RT_PLAN_STORAGE,
    uids::RT_ION_PLAN_STORAGE,
    uids::VL_ENDOSCOPIC_IMAGE_STORAGE,
    uids::VL_MICROSCOPIC_IMAGE_STORAGE,
    uids::VL_PHOTOGRAPHIC_IMAGE_STORAGE,
    uids::VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE,
    uids::VIDEO_ENDOSCOPIC_IMAGE_STORAGE,
    uids::VIDEO_PHOTOGRAPHIC_IMAGE_STORAGE,
    uids::OPHTHALMIC_PHOTOGRAPHY8_BIT_IMAGE_STORAGE,
    uids::OPHTHALMIC_TOMOGRAPHY_IMAGE_STORAGE,
    uids::DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE,
    uids::SEGMENTATION_STORAGE,
    uids::SPATIAL_REGISTRATION_STORAGE,
    uids::RAW_DATA_STORAGE,
    uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::COLOR_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::BASIC_TEXT_SR_STORAGE,
    uids::ENHANCED_SR_STORAGE,
    uids::COMPREHENSIVE_SR_STORAGE,
    uids::COMPREHENSIVE3_DSR_STORAGE,
    uids::MAMMOGRAPHY_CADSR_STORAGE,
    uids::X_RAY_RADIATION_DOSE_SR_STORAGE,
    uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
    uids::ENCAPSULATED_PDF_STORAGE,
    uids::ENCAPSULATED_CDA_STORAGE,
    uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
    uids::GENERAL_ECG_WAVEFORM_STORAGE,
    uids::HEMODYNAMIC_WAVEFORM_STORAGE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_leave_room_for_query_retrieve_contexts() {
        // 128 contexts per association (odd IDs 1..=255), minus Verification and the six Q/R models.
        assert!(STORAGE_SOP_CLASSES.len() <= 128 - 7);
        let mut unique = STORAGE_SOP_CLASSES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), STORAGE_SOP_CLASSES.len(), "duplicate storage SOP class");
    }
}
