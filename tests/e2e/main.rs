//! The end-to-end test binary: the broker runs as a child process (`hie-edge-e2e`, the same code as
//! `hie-edge`) and every test talks to it over the real wire. One module per concern.

mod adt_fixtures;
mod config;
mod crash;
// Helpers of the DICOM modules below.
mod dicom_common;
// Association abuse and malformed data sets at the broker's DICOM listener.
mod dicom_abuse;
// The DICOM listener: storescu to the broker, manifests from received headers or the PACS.
mod dicom_listener;
// The DICOMweb PACS adapter against Orthanc: manifests say what the files say.
mod dicomweb_pacs;
// The identity feed to python-hl7's MLLP server as a stand-in registry feed (remote mode).
mod feed_remote;
mod kos_cli;
// kos build through every PACS adapter (folder, dimse with Orthanc and dcmqrscp, dicomweb).
mod kos_adapters;
mod mllp_abuse;
// Polling a DIMSE PACS: new studies, deleted instances, deleted studies.
mod pacs_polling;
// RAD-69 and ITI-43 at /xdsi/imaging-source over mutual TLS, Orthanc as the PACS.
mod retrieve;
// Issue 4: publishing to the registry, against Orthanc and the built-in registry.
mod publish_cli;
mod publish_faults;
mod publish_flow;
// What a patient merge does to what was published, per the profile's [patient_merge] policy.
mod publish_merge;
/// Shared by the publishing tests (no tests of its own).
mod publishing;

use hie_e2e::{BrokerOptions, BrokerProc, Engine};

/// The affinity domain authority the IPF PIX fixtures use for their MPI identifiers; the tests set
/// it as `[affinity_domain] patient_id_authority` so those identifiers link.
pub const IPF_MPI_OID: &str = "2.16.840.1.113883.3.37.4.1.1.2.1.1";

/// The hospital's MRN authority the tests configure (`[affinity_domain] local_authority`): PID-3
/// entries without an assigning authority are taken to be in it.
pub const LOCAL_AUTHORITY: &str = "E2EHOSP&1.2.3.4.5.6.7&ISO";

/// Starts a broker for a test, with the fixtures' affinity domain authority.
pub fn broker(engine: Engine) -> BrokerProc {
    broker_with(BrokerOptions::new(engine))
}

pub fn broker_with(opts: BrokerOptions) -> BrokerProc {
    hie_e2e::init!();
    // The caller's overrides come last so they win.
    let mut o = BrokerOptions::new(opts.engine)
        .env("HIE_EDGE__AFFINITY_DOMAIN__PATIENT_ID_AUTHORITY", IPF_MPI_OID)
        .env("HIE_EDGE__AFFINITY_DOMAIN__LOCAL_AUTHORITY", LOCAL_AUTHORITY)
        // The fixtures' domain (IPF's MPI) has no profile (the quickstart's is for another domain),
        // so these brokers don't publish.
        .env("HIE_EDGE__AFFINITY_DOMAIN__PROFILE", "")
        .env("HIE_EDGE__REGISTRY__KIND", "");
    o.extra_env.extend(opts.extra_env);
    BrokerProc::start_with(o)
}
