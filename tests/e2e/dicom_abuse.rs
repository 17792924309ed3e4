//! Association abuse at the broker's DICOM listener (reliability-security.md section 6 and S6),
//! against the broker binary: a PDU declaring 4 GiB (A-ABORT, peak RSS flat), lying lengths, the
//! association cap (transient rejection, local limit exceeded), an idle association (aborted by
//! the timer); and malformed data sets in a C-STORE (a failure status, nothing stored). After
//! each, the broker is alive and answers C-ECHO.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use hie_dicom_net::{ClientOptions, ProposedContext};
use hie_dimse::{Status, StatusClass};
use hie_e2e::{BrokerOptions, BrokerProc, Engine, vm_hwm_kib};
use hie_testkit::dcmtk;

use crate::broker_with;
use crate::dicom_common::metric;

const T: Duration = Duration::from_secs(10);
const VERIFICATION: &str = "1.2.840.10008.1.1";
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// PS3.8 9.3.8: A-ABORT.
const A_ABORT: u8 = 0x07;
/// PS3.8 9.3.4: A-ASSOCIATE-RJ.
const A_ASSOCIATE_RJ: u8 = 0x03;
/// PS3.8 9.3.3: A-ASSOCIATE-AC.
const A_ASSOCIATE_AC: u8 = 0x02;

fn broker(extra: &[(&str, &str)]) -> BrokerProc {
    let mut options = BrokerOptions::new(Engine::Sqlite).env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0");
    for (key, value) in extra {
        options = options.env(key, value);
    }
    broker_with(options)
}

fn assert_alive_and_echoing(broker: &mut BrokerProc, after: &str) {
    assert!(broker.alive(), "broker died after {after}; log:\n{}", broker.stderr_tail(40));
    let port = broker.dicom_addr().port().to_string();
    let echo = dcmtk("echoscu", &["-aet", "PROBE", "-aec", "HIE_EDGE", "127.0.0.1", &port]);
    assert!(echo.success(), "no C-ECHO after {after}: {}", echo.combined());
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, T).expect("connect to the listener");
    stream.set_read_timeout(Some(T)).expect("read timeout");
    stream.set_write_timeout(Some(T)).expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// The A-ASSOCIATE-RQ of a verification SCU calling `HIE_EDGE`.
fn associate_rq() -> Vec<u8> {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "ABUSER".to_owned(),
        called_ae_title: "HIE_EDGE".to_owned(),
        application_context_name: "1.2.840.10008.3.1.1.1".to_owned(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: VERIFICATION.to_owned(),
            transfer_syntaxes: vec![IMPLICIT_LE.to_owned()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16_384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::pdu::write_pdu(&mut bytes, &rq).expect("encode A-ASSOCIATE-RQ");
    bytes
}

/// Reads one PDU's type and body (bounded: the broker's PDUs are small).
fn read_pdu(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 6];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    assert!(length < 1 << 20, "a PDU of {length} bytes from the broker");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// An established association on a raw socket.
fn associated(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(&associate_rq()).expect("send A-ASSOCIATE-RQ");
    let (pdu_type, _) = read_pdu(&mut stream).expect("an answer to A-ASSOCIATE-RQ");
    assert_eq!(pdu_type, A_ASSOCIATE_AC, "associated");
    stream
}

/// Reads until the broker closes; returns the type of the first PDU it sent, if any.
fn first_pdu_then_close(stream: &mut TcpStream, limit: Duration) -> Option<u8> {
    let deadline = Instant::now() + limit;
    let mut first = None;
    let mut buffer = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "the broker kept the connection open for {limit:?}");
        match stream.read(&mut buffer) {
            Ok(0) => return first,
            Ok(n) => {
                first.get_or_insert(buffer[0]);
                let _ = n;
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return first,
        }
    }
}

#[test]
fn pdus_declaring_4_gib_are_aborted_and_memory_stays_flat() {
    let mut broker = broker(&[]);
    let addr = broker.dicom_addr();
    let before = vm_hwm_kib(broker.pid());
    for _ in 0..20 {
        // As the first PDU: an A-ASSOCIATE-RQ header declaring 4 GiB.
        let mut stream = connect(addr);
        stream.write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01]).expect("send");
        assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "first PDU of 4 GiB");
        // On an established association: a P-DATA-TF declaring 4 GiB.
        let mut stream = associated(addr);
        stream.write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x10, 0x00]).expect("send");
        assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "P-DATA-TF of 4 GiB");
    }
    let after = vm_hwm_kib(broker.pid());
    eprintln!("broker VmHWM before {before} KiB, after 40 PDUs declaring 4 GiB: {after} KiB");
    assert!(after.saturating_sub(before) < 16 * 1024, "VmHWM grew from {before} to {after} KiB");
    assert_alive_and_echoing(&mut broker, "4 GiB PDUs");
    assert!(metric(&broker, "hie_dicom_associations_total{fate=\"dropped\"}") >= 20.0);
}

#[test]
fn lying_lengths_are_aborted_or_closed() {
    let mut broker = broker(&[]);
    let addr = broker.dicom_addr();
    // A-RELEASE-RQ has a fixed length of 4 (PS3.8 9.3.6); this one says 5.
    let mut stream = associated(addr);
    stream.write_all(&[0x05, 0x00, 0x00, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0]).expect("send");
    assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "release of length 5");
    // A P-DATA-TF of 20 bytes whose PDV item claims 1,000.
    let mut stream = associated(addr);
    let mut pdata = vec![0x04, 0x00, 0x00, 0x00, 0x00, 0x14];
    pdata.extend_from_slice(&1_000u32.to_be_bytes());
    pdata.extend_from_slice(&[1, 0x03]);
    pdata.extend_from_slice(&[0u8; 14]);
    stream.write_all(&pdata).expect("send");
    assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "PDV longer than its PDU");
    // An A-ASSOCIATE-RQ declaring more than is sent, then the sender closes: nothing to answer.
    let mut stream = connect(addr);
    let rq = associate_rq();
    stream.write_all(&rq[..rq.len() / 2]).expect("send half");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(first_pdu_then_close(&mut stream, T), None, "a truncated A-ASSOCIATE-RQ");
    // Garbage that is no PDU type at all.
    let mut stream = connect(addr);
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "not a PDU");
    assert_alive_and_echoing(&mut broker, "lying lengths");
}

#[test]
fn the_association_cap_rejects_transiently_with_local_limit_exceeded() {
    let mut broker = broker(&[("HIE_EDGE__DICOM__MAX_ASSOCIATIONS", "2")]);
    let addr = broker.dicom_addr();
    let first = associated(addr);
    let _second = associated(addr);
    let mut third = connect(addr);
    third.write_all(&associate_rq()).expect("send");
    let (pdu_type, body) = read_pdu(&mut third).expect("an answer");
    assert_eq!(pdu_type, A_ASSOCIATE_RJ);
    // PS3.8 9.3.4: reserved, result 2 (transient), source 3 (service-provider presentation),
    // reason 2 (local-limit-exceeded).
    assert_eq!(&body[1..4], &[2, 3, 2], "{body:?}");
    drop(first);
    // The freed slot takes a new association (the broker notices the close at once).
    let deadline = Instant::now() + T;
    loop {
        let port = addr.port().to_string();
        if dcmtk("echoscu", &["-aet", "PROBE", "-aec", "HIE_EDGE", "127.0.0.1", &port]).success() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_alive_and_echoing(&mut broker, "the cap");
    assert!(metric(&broker, "hie_dicom_associations_total{fate=\"rejected\"}") >= 1.0);
}

#[test]
fn an_idle_association_is_aborted_by_the_timer() {
    let mut broker = broker(&[("HIE_EDGE__DICOM__IDLE_TIMEOUT_SECS", "1")]);
    let mut stream = associated(broker.dicom_addr());
    let started = Instant::now();
    assert_eq!(first_pdu_then_close(&mut stream, T), Some(A_ABORT), "the idle association");
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(900), "aborted after {after:?}, before the idle timeout");
    assert_alive_and_echoing(&mut broker, "an idle association");
}

/// An Explicit VR Little Endian element with a short length.
fn element(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut padded = value.to_vec();
    if padded.len() % 2 == 1 {
        padded.push(if vr == b"UI" { 0 } else { b' ' });
    }
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&group.to_le_bytes());
    bytes.extend_from_slice(&element.to_le_bytes());
    bytes.extend_from_slice(vr);
    bytes.extend_from_slice(&u16::try_from(padded.len()).expect("short value").to_le_bytes());
    bytes.extend_from_slice(&padded);
    bytes
}

/// An MR data set with the UIDs a manifest needs.
fn data_set(sop_instance_uid: &str) -> Vec<u8> {
    let mut bytes = element(0x0008, 0x0016, b"UI", MR_IMAGE_STORAGE.as_bytes());
    bytes.extend(element(0x0008, 0x0018, b"UI", sop_instance_uid.as_bytes()));
    bytes.extend(element(0x0010, 0x0010, b"PN", b"ABUSE^TEST"));
    bytes.extend(element(0x0020, 0x000D, b"UI", b"1.2.840.99999.66.1"));
    bytes.extend(element(0x0020, 0x000E, b"UI", b"1.2.840.99999.66.2"));
    bytes
}

#[test]
fn malformed_data_sets_in_a_c_store_get_failures_and_nothing_is_stored() {
    let mut broker = broker(&[]);
    let addr = broker.dicom_addr();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let statuses = runtime.block_on(async move {
        let contexts = vec![ProposedContext::new(MR_IMAGE_STORAGE, &[EXPLICIT_LE])];
        let mut association = hie_dicom_net::connect(addr, &ClientOptions::new("ABUSER", "HIE_EDGE"), &contexts)
            .await
            .expect("an association");
        let mut statuses = Vec::new();
        // A length running past the end of the data set.
        let mut lying = data_set("1.2.840.99999.66.3");
        lying.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, b'L', b'O', 0xF0, 0x7F, b'x', b'y']);
        // Structure fine, but no SOP Instance UID.
        let mut no_uid = element(0x0008, 0x0016, b"UI", MR_IMAGE_STORAGE.as_bytes());
        no_uid.extend(element(0x0020, 0x000D, b"UI", b"1.2.840.99999.66.1"));
        // Another instance than the C-STORE-RQ announces.
        let other = data_set("1.2.840.99999.66.9");
        // A header of 9 MiB before Pixel Data: a private OB element (0019,1001).
        let mut huge = data_set("1.2.840.99999.66.6");
        huge.extend_from_slice(&[0x19, 0x00, 0x01, 0x10, b'O', b'B', 0, 0]);
        let huge_len = 9u32 << 20;
        huge.extend_from_slice(&huge_len.to_le_bytes());
        huge.resize(huge.len() + huge_len as usize, 0);
        for (sop, bytes) in [
            ("1.2.840.99999.66.3", lying),
            ("1.2.840.99999.66.4", no_uid),
            ("1.2.840.99999.66.5", other),
            ("1.2.840.99999.66.6", huge),
        ] {
            let (status, detail) =
                hie_dicom_net::scu::store_with_detail(&mut association, MR_IMAGE_STORAGE, sop, &bytes[..])
                    .await
                    .expect("a C-STORE-RSP");
            statuses.push((status, detail.error_comment.unwrap_or_default()));
        }
        association.release().await.expect("release");
        statuses
    });
    eprintln!("statuses and error comments: {statuses:#?}");
    for (status, comment) in &statuses {
        assert_eq!(status.class(), StatusClass::Failure, "{statuses:?}");
        assert!(!comment.is_empty() && comment.chars().count() <= 64, "an Error Comment (LO): {comment:?}");
    }
    let codes: Vec<Status> = statuses.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes[..3], [Status(0xC000), Status(0xC000), Status(0xC000)], "cannot understand");
    assert_eq!(codes[3], Status::OUT_OF_RESOURCES, "a header over the cap");
    assert!(statuses[0].1.contains("malformed"), "{:?}", statuses[0]);
    assert!(statuses[1].1.contains("is missing"), "{:?}", statuses[1]);
    assert!(statuses[3].1.contains("exceeds"), "{:?}", statuses[3]);
    let (status, body) = broker.get("/api/studies");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "[]", "nothing stored");
    assert_eq!(metric(&broker, "hie_dicom_instances_total{outcome=\"refused\"}"), 4.0);
    assert_eq!(metric(&broker, "hie_dicom_instances_total{outcome=\"stored\"}"), 0.0);
    assert_alive_and_echoing(&mut broker, "malformed data sets");
}
