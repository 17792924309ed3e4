//! The DICOMweb PACS against a real Orthanc (Debian `orthanc` + `orthanc-dicomweb`): QIDO-RS
//! instance lookups and WADO-RS retrieval streamed part by part, checked byte for byte against
//! what was stored; which WADO-RS requests are made (through a recording proxy); transfer syntax
//! requests; a body that breaks off; a consumer that goes away.

#[path = "support/http_proxy.rs"]
mod http_proxy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use hie_broker::ports::{InstanceKey, Pacs, RetrieveEvent, RetrieveReport};
use hie_outbound::pacs::{DicomWebPacs, DicomWebSettings};
use hie_testkit::fixtures::IDS_DEPT024_A;
use hie_testkit::{GeneratedStudy, Orthanc, generate_study, part10};
use http_proxy::HttpProxy;
use tokio::sync::mpsc;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

fn pacs(url: String) -> DicomWebPacs {
    DicomWebPacs::new(DicomWebSettings {
        url,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn keys(study: &GeneratedStudy) -> Vec<InstanceKey> {
    study
        .instances
        .iter()
        .map(|instance| InstanceKey {
            study_instance_uid: study.study_instance_uid.clone(),
            series_instance_uid: instance.series_instance_uid.clone(),
            sop_instance_uid: instance.sop_instance_uid.clone(),
        })
        .collect()
}

/// One instance as received: Begin's fields and the bytes between Begin and End.
#[derive(Debug)]
struct Received {
    sop_class_uid: String,
    transfer_syntax_uid: String,
    bytes: Vec<u8>,
}

/// Runs a retrieval and collects every whole instance, checking the event grammar on the way.
async fn retrieve_all(
    pacs: &DicomWebPacs,
    keys: &[InstanceKey],
    syntaxes: &[&str],
) -> (BTreeMap<String, Received>, RetrieveReport, usize) {
    let syntaxes: Vec<String> = syntaxes.iter().map(|syntax| (*syntax).to_owned()).collect();
    let (sink, mut events) = mpsc::channel(4);
    let collect = async {
        let mut received = BTreeMap::new();
        let mut current: Option<(String, Received)> = None;
        let mut n_lost = 0;
        while let Some(event) = events.recv().await {
            match event {
                RetrieveEvent::Begin { sop_class_uid, sop_instance_uid, transfer_syntax_uid, part10 } => {
                    assert!(part10, "WADO-RS gives Part 10 files");
                    assert!(current.is_none(), "Begin inside an instance");
                    current =
                        Some((sop_instance_uid, Received { sop_class_uid, transfer_syntax_uid, bytes: Vec::new() }));
                }
                RetrieveEvent::Data(bytes) => {
                    current.as_mut().expect("Data outside an instance").1.bytes.extend_from_slice(&bytes)
                }
                RetrieveEvent::End => {
                    let (sop, instance) = current.take().expect("End outside an instance");
                    assert!(received.insert(sop, instance).is_none(), "an instance sent twice");
                }
                RetrieveEvent::Lost(_) => {
                    current.take().expect("Lost outside an instance");
                    n_lost += 1;
                }
            }
        }
        assert!(current.is_none(), "the retrieval ended inside an instance");
        (received, n_lost)
    };
    let (report, (received, n_lost)) = tokio::join!(pacs.retrieve(keys, &syntaxes, sink), collect);
    (received, report.unwrap(), n_lost)
}

#[tokio::test]
async fn instances_are_found_by_uid_list_and_by_listing() {
    let orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&IDS_DEPT024_A.images()[0], 100, 50, dir.path());
    orthanc.upload_all(&study.paths());
    let pacs = pacs(format!("{}/dicom-web", orthanc.http_url()));
    let all = keys(&study);

    let mut few: Vec<InstanceKey> = all[..3].to_vec();
    few.push(InstanceKey { sop_instance_uid: "1.2.3.4.5".to_owned(), ..all[0].clone() });
    // A real instance named under the other series is not that instance.
    few.push(InstanceKey { series_instance_uid: all[99].series_instance_uid.clone(), ..all[4].clone() });
    // Something that is not a UID never reaches a URL.
    few.push(InstanceKey { sop_instance_uid: "1.2&SOPInstanceUID=*".to_owned(), ..all[0].clone() });
    let found = pacs.find_instances(&few).await.unwrap();
    let mut found_sops: Vec<&str> = found.iter().map(|found| found.key.sop_instance_uid.as_str()).collect();
    found_sops.sort_unstable();
    let mut expected: Vec<&str> = all[..3].iter().map(|key| key.sop_instance_uid.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(found_sops, expected);
    for found in &found {
        assert_eq!(found.sop_class_uid, study.sop_class_uid);
        assert_eq!(found.stored_transfer_syntax_uid, None, "Orthanc does not give (0008,3002)");
    }

    // Many: the study's listing, intersected.
    let mut many = all[..80].to_vec();
    many.extend((0..5).map(|n| InstanceKey { sop_instance_uid: format!("1.2.3.4.{n}"), ..all[0].clone() }));
    assert_eq!(pacs.find_instances(&many).await.unwrap().len(), 80);
    // A study the PACS does not hold.
    let unknown = [InstanceKey { study_instance_uid: "1.2.3.999".to_owned(), ..all[0].clone() }];
    assert!(pacs.find_instances(&unknown).await.unwrap().is_empty());
}

#[tokio::test]
async fn whole_series_are_counted_not_listed() {
    let orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&IDS_DEPT024_A.images()[0], 60, 30, &dir.path().join("s"));
    orthanc.upload_all(&study.paths());
    let proxy = HttpProxy::start(orthanc_addr(&orthanc));
    let pacs = pacs(proxy.url("/dicom-web"));
    let all = keys(&study);
    let found = pacs.find_instances(&all).await.unwrap();
    assert_eq!(found.len(), 60);
    assert!(found.iter().all(|found| found.sop_class_uid == study.sop_class_uid));
    let requests = proxy.requests();
    assert_eq!(requests.len(), 3, "one series query and one instance per series: {requests:#?}");
    assert!(requests.iter().all(|line| !line.contains("SOPInstanceUID=")), "{requests:#?}");

    // The count matches but one instance named is not there: taken as held, and the retrieval
    // then reports it failed (so the endpoint aborts rather than completes a promise).
    let mut swapped = all[..30].to_vec();
    swapped[29].sop_instance_uid = "1.2.3.4.5.6".to_owned();
    assert_eq!(pacs.find_instances(&swapped).await.unwrap().len(), 30);
    let (received, report, _) = retrieve_all(&pacs, &swapped, &[EXPLICIT_LE]).await;
    assert_eq!(received.len(), 29);
    assert_eq!(report.failed.iter().map(|(sop, _)| sop.as_str()).collect::<Vec<_>>(), ["1.2.3.4.5.6"]);
}

#[tokio::test]
async fn a_whole_study_is_one_request_and_every_data_set_is_byte_identical() {
    let orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&IDS_DEPT024_A.images()[0], 30, 10, dir.path());
    orthanc.upload_all(&study.paths());
    let proxy = HttpProxy::start(orthanc_addr(&orthanc));
    let pacs = pacs(proxy.url("/dicom-web"));
    let all = keys(&study);

    let (received, report, n_lost) = retrieve_all(&pacs, &all, &[EXPLICIT_LE]).await;
    assert_eq!((received.len(), report.sent.len(), report.failed.len(), n_lost), (30, 30, 0, 0), "{report:?}");
    for instance in &study.instances {
        let got = &received[&instance.sop_instance_uid];
        assert_eq!(got.sop_class_uid, study.sop_class_uid);
        assert_eq!(got.transfer_syntax_uid, EXPLICIT_LE);
        let sent = part10::split(&got.bytes).unwrap();
        assert_eq!(sent.sop_instance_uid, instance.sop_instance_uid);
        assert!(
            sent.data_set == part10::read(&instance.path).data_set,
            "{}: data set differs",
            instance.sop_instance_uid
        );
    }
    let wado: Vec<String> = proxy.requests().into_iter().filter(|line| !line.contains('?')).collect();
    assert_eq!(wado, [format!("GET /dicom-web/studies/{} HTTP/1.1", study.study_instance_uid)]);

    // Two whole series and two instances of the third: two series requests and two instance requests.
    proxy.clear();
    let mut some: Vec<InstanceKey> = all[..20].to_vec();
    some.extend_from_slice(&all[25..27]);
    let (received, report, _) = retrieve_all(&pacs, &some, &[EXPLICIT_LE]).await;
    assert_eq!((received.len(), report.failed.len()), (22, 0));
    let wado: Vec<String> = proxy.requests().into_iter().filter(|line| !line.contains('?')).collect();
    assert_eq!(wado.len(), 4, "{wado:#?}");
    assert_eq!(wado.iter().filter(|line| line.contains("/instances/")).count(), 2, "{wado:#?}");
}

#[tokio::test]
async fn the_requested_transfer_syntax_is_asked_for_and_an_impossible_one_fails_cleanly() {
    let orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&IDS_DEPT024_A.images()[0], 4, 4, dir.path());
    orthanc.upload_all(&study.paths());
    let pacs = pacs(format!("{}/dicom-web", orthanc.http_url()));
    let all = keys(&study);

    // Orthanc transcodes to Implicit VR Little Endian on request.
    let (received, report, _) = retrieve_all(&pacs, &all[..2], &[IMPLICIT_LE]).await;
    assert_eq!(received.len(), 2, "{report:?}");
    for got in received.values() {
        assert_eq!(got.transfer_syntax_uid, IMPLICIT_LE);
        assert_eq!(part10::split(&got.bytes).unwrap().transfer_syntax_uid, IMPLICIT_LE);
    }
    // Preference order: the first one it can give.
    let (received, _, _) = retrieve_all(&pacs, &all[..1], &[EXPLICIT_LE, IMPLICIT_LE]).await;
    assert_eq!(received.values().next().unwrap().transfer_syntax_uid, EXPLICIT_LE);
    // A refused first choice falls back to the next.
    let (received, _, _) = retrieve_all(&pacs, &all[..1], &[JPEG_BASELINE, IMPLICIT_LE]).await;
    assert_eq!(received.values().next().unwrap().transfer_syntax_uid, IMPLICIT_LE);
    // A 16-bit PET image has no JPEG Baseline form: every instance fails, none is begun.
    let (received, report, n_lost) = retrieve_all(&pacs, &all, &[JPEG_BASELINE]).await;
    assert!(received.is_empty() && n_lost == 0, "{received:?}");
    assert_eq!(report.failed.len(), 4, "{report:?}");
    assert!(
        report.failed.iter().all(|(_, reason)| reason.contains("HTTP 5") || reason.contains("HTTP 4")),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_consumer_that_goes_away_stops_the_retrieval() {
    let orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&IDS_DEPT024_A.images()[0], 40, 40, dir.path());
    orthanc.upload_all(&study.paths());
    let pacs = pacs(format!("{}/dicom-web", orthanc.http_url()));
    let all = keys(&study);
    let syntaxes = vec![EXPLICIT_LE.to_owned()];
    let (sink, mut events) = mpsc::channel(2);
    let consumer = async move {
        while let Some(event) = events.recv().await {
            if matches!(event, RetrieveEvent::End) {
                break;
            }
        }
        drop(events);
    };
    let (report, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(pacs.retrieve(&all, &syntaxes, sink), consumer)
    })
    .await
    .expect("the retrieval ends once the consumer is gone");
    let report = report.unwrap();
    assert!(report.sent.len() < 40, "stopped early: {} sent", report.sent.len());
}

/// A stand-in DICOMweb server whose WADO-RS answer breaks off inside the second part.
#[tokio::test]
async fn a_body_that_breaks_off_mid_part_is_lost_not_complete() {
    let file = std::fs::read(&IDS_DEPT024_A.images()[0]).unwrap();
    let meta = part10::split(&file).unwrap();
    let study = "1.3.6.1.4.1.21367.201599.1.201604020956016";
    let series = "1.3.6.1.4.1.21367.201599.2.201604020956016";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body_file = file.clone();
    let first_uid = meta.sop_instance_uid.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0_u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_owned();
            if line.contains("/series?") {
                // No series counts: instance requests would follow; the whole study is asked.
                let answer = format!(
                    "[{{\"0020000E\":{{\"vr\":\"UI\",\"Value\":[\"{series}\"]}},\"00201209\":{{\"vr\":\"IS\",\"Value\":[2]}}}}]"
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                continue;
            }
            let mut body = Vec::new();
            body.extend_from_slice(b"--xyz\r\nContent-Type: application/dicom\r\n\r\n");
            body.extend_from_slice(&body_file);
            body.extend_from_slice(b"\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\n");
            let mut second = body_file.clone();
            // The second part is another instance (its UID in the meta group), cut short.
            let uid_at = second.windows(first_uid.len()).position(|w| w == first_uid.as_bytes()).unwrap();
            let last = uid_at + first_uid.len() - 1;
            second[last] = if second[last] == b'1' { b'2' } else { b'1' };
            // Long enough that its first bytes are forwarded (the splitter hands out 128 KiB
            // chunks) before it breaks off.
            second.extend(std::iter::repeat_n(0_u8, 400_000));
            body.extend_from_slice(&second[..300_000]);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=xyz\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() * 2
            );
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    });
    let second_uid = {
        let mut uid = meta.sop_instance_uid.clone().into_bytes();
        let last = uid.len() - 1;
        uid[last] = if uid[last] == b'1' { b'2' } else { b'1' };
        String::from_utf8(uid).unwrap()
    };
    let keys = [
        InstanceKey {
            study_instance_uid: study.to_owned(),
            series_instance_uid: series.to_owned(),
            sop_instance_uid: meta.sop_instance_uid.clone(),
        },
        InstanceKey {
            study_instance_uid: study.to_owned(),
            series_instance_uid: series.to_owned(),
            sop_instance_uid: second_uid.clone(),
        },
    ];
    let pacs = pacs(format!("http://{addr}/dicom-web"));
    let (received, report, n_lost) = retrieve_all(&pacs, &keys, &[EXPLICIT_LE]).await;
    assert_eq!(received.keys().collect::<Vec<_>>(), [&meta.sop_instance_uid]);
    assert_eq!(received[&meta.sop_instance_uid].bytes, file, "the first part is passed through unchanged");
    assert_eq!(n_lost, 1);
    assert_eq!(report.sent, std::slice::from_ref(&meta.sop_instance_uid));
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, second_uid);
}

fn orthanc_addr(orthanc: &Orthanc) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], orthanc.http_port()))
}
