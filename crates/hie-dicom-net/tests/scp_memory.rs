//! A PDU header declaring 4 GiB, sent to our SCP before and after association, is answered with
//! A-ABORT (invalid-PDU-parameter) and never allocated: a counting global allocator (peak_alloc)
//! in this test binary, which holds this one test only so that nothing else allocates meanwhile,
//! shows the peak heap growth of the whole exchange staying in kilobytes. The peer also streams
//! 8 MiB of body bytes after the header, which must be discarded, not buffered.

mod common;

use std::time::Duration;

use common::*;
use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use hie_dicom_net::ServerPolicy;
use hie_dicom_net::pdu_io::{PduLimits, PduReader, PduWriter};
use hie_dimse::uids;
use peak_alloc::PeakAlloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdu_declaring_4_gib_is_aborted_without_being_allocated() {
    let dir = temp_dir("memory");
    let scp = start_scp(ServerPolicy::new(OUR_AE), FileHandler::new(dir.path())).await;
    let junk = vec![0x55u8; 64 * 1024];
    // Warm up the SCP's and the runtime's own allocations with one ordinary association.
    let mut association =
        hie_dicom_net::connect(scp.addr, &options(OUR_AE), &[hie_dicom_net::ProposedContext::verification()])
            .await
            .unwrap();
    hie_dicom_net::scu::echo(&mut association).await.unwrap();
    association.release().await.unwrap();

    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    for inside_association in [false, true] {
        let mut stream = TcpStream::connect(scp.addr).await.unwrap();
        if inside_association {
            let request = AssociationRQ {
                protocol_version: 1,
                calling_ae_title: "RAW".to_owned(),
                called_ae_title: OUR_AE.to_owned(),
                application_context_name: hie_dicom_net::APPLICATION_CONTEXT_NAME.to_owned(),
                presentation_contexts: vec![PresentationContextProposed {
                    id: 1,
                    abstract_syntax: uids::VERIFICATION.to_owned(),
                    transfer_syntaxes: vec![uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned()],
                }],
                user_variables: vec![UserVariableItem::MaxLength(16_384)],
            };
            PduWriter::new().write(&mut stream, &Pdu::AssociationRQ(request)).await.unwrap();
            let answer = PduReader::new().read(&mut stream, &PduLimits::new(16_384)).await.unwrap();
            assert!(matches!(answer, Pdu::AssociationAC(_)));
        }
        // P-DATA-TF (and, before association, A-ASSOCIATE-RQ) declaring 0xFFFFFFFF bytes.
        let pdu_type = if inside_association { 0x04 } else { 0x01 };
        stream.write_all(&[pdu_type, 0, 0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        // Keep sending body bytes; the SCP must not keep them. Errors once it closes are fine.
        for _ in 0..128 {
            if stream.write_all(&junk).await.is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert_eq!(answer.get(..10), Some(&[7, 0, 0, 0, 0, 4, 0, 0, 2, 6][..]), "{answer:?}");
    }
    let growth = HEAP.peak_usage().saturating_sub(baseline);
    eprintln!("peak heap growth during both exchanges: {growth} bytes");
    assert!(growth < MAX_GROWTH, "peak heap grew by {growth} bytes");
    scp.shut_down().await;
}

/// The test's own 64 KiB junk buffer aside, an exchange costs a read buffer and a few small
/// objects; 4 MiB leaves room for the runtime and still catches a 4 GiB (or 8 MiB) buffer.
const MAX_GROWTH: usize = 4 * 1024 * 1024;
