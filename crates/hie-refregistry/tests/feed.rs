//! The ITI-8 Patient Identity Feed over MLLP: the shared IPF ADT fixtures and our own messages
//! sent by python-hl7's `mllp_send`, the ACK codes of ITI TF-2x C.2.3 (decided from the TF, not
//! from what the registry answers), repeats answered without being applied again, merges that
//! move metadata, and the listener's limits over raw TCP.

mod common;
mod support;

use std::time::Duration;

use common::*;
use hie_core::Oid;
use hie_refregistry::RefRegistryConfig;
use support::{Engine, Harness, adt_a01, adt_a40, err_code, msa_code, msa_field};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The IPF MPI's affinity domain in the fixtures.
const IPF_DOMAIN: &str = "2.16.840.1.113883.3.37.4.1.1.2.1.1";

fn fixture(name: &str) -> String {
    String::from_utf8(support::read(&format!("hl7/{name}"))).unwrap()
}

#[tokio::test]
async fn the_ipf_fixtures_register_and_merge_the_affinity_domain_ids_only() {
    for engine in support::ENGINES {
        let harness = Harness::start(engine, IPF_DOMAIN).await;
        // PID-3: ""^^^&2.71&ISO ~ 306563^^^MPI&<domain>&ISO ~ 30753^^^KHKN&<other>&ISO.
        let ack = harness.mllp_send(&fixture("ipf-pixsource-A01-v231.hl7")).await;
        assert_eq!(msa_code(&ack), "AA", "{ack}");
        assert_eq!(msa_field(&ack, 2), "371601", "MSA-2 echoes MSH-10");
        assert!(harness.store.reg_patient(&harness.patient("306563")).await.unwrap().is_some());
        let other_domain = "30753^^^&2.16.840.1.113883.3.37.4.1.1.2.611.1&ISO";
        assert!(harness.store.reg_patient(other_domain).await.unwrap().is_none(), "other domains are ignored (ITI8-6)");
        assert_eq!(harness.counts().await.patients, 1);

        // A40: MRG-1 704686 into PID-3 142025; the subsumed patient's documents follow.
        let subsumed = harness.patient("704686");
        harness.feed("704686").await;
        assert_success(
            &register(&harness, &submission("1.9.1", &subsumed, vec![entry("D", "1.2.1", &subsumed)])).await,
        );
        let ack = harness.mllp_send(&fixture("ipf-pixsource-A40-v231.hl7")).await;
        assert_eq!(msa_code(&ack), "AA", "{ack}");
        let merged = harness.store.reg_patient(&subsumed).await.unwrap().unwrap();
        assert_eq!(merged.merged_into.as_deref(), Some(harness.patient("142025").as_str()));
        let documents = harness.store.reg_documents_by_unique_id(&["1.2.1".to_owned()]).await.unwrap();
        assert_eq!(documents[0].patient_id, harness.patient("142025"), "{engine:?}: metadata moved to the survivor");
        let survivor = harness.patient("142025");
        assert_success(
            &register(&harness, &submission("1.9.2", &survivor, vec![entry("D2", "1.2.2", &survivor)])).await,
        );
    }
}

#[tokio::test]
async fn a_merge_whose_mrg_names_the_domain_in_a_later_repetition_is_applied() {
    // ipf-iti8-A40: MRG-1 is `305010~7200117359^^^BBB&<domain>&ISO`, PID-3 has three domains.
    let harness = Harness::start(Engine::Sqlite, "2.16.840.1.113883.3.37.4.1.1.2.611.1").await;
    let ack = harness.mllp_send(&fixture("ipf-iti8-A40-v231.hl7")).await;
    assert_eq!(msa_code(&ack), "AA", "{ack}");
    let subsumed = harness.store.reg_patient(&harness.patient("7200117359")).await.unwrap().unwrap();
    assert_eq!(subsumed.merged_into.as_deref(), Some(harness.patient("7200117317").as_str()));
}

#[tokio::test]
async fn a_repeated_message_is_answered_again_and_not_applied_twice() {
    for engine in support::ENGINES {
        let harness = Harness::start(engine, IPF_DOMAIN).await;
        let first = harness.mllp_send(&adt_a01(&harness.patient("P1"), "REPEAT1")).await;
        assert_eq!(msa_code(&first), "AA");
        let before = harness.counts().await;
        let again = harness.mllp_send(&adt_a01(&harness.patient("P1"), "REPEAT1")).await;
        assert_eq!(again, first, "{engine:?}: the same ACK, byte for byte (its own MSH-10 included)");
        assert_eq!(harness.counts().await, before, "nothing applied or recorded twice");
        // A repeated merge is not applied again either: after P2 was merged into P1, the same
        // message with MSH-10 reused is answered AA again, not refused as a merge of a merged id.
        harness.feed("P2").await;
        let merge = adt_a40(&harness.patient("P1"), &harness.patient("P2"), "MERGE7");
        let ack = harness.mllp_send(&merge).await;
        assert_eq!(msa_code(&ack), "AA");
        assert_eq!(harness.mllp_send(&merge).await, ack);
    }
}

#[tokio::test]
async fn concurrent_feeds_are_each_applied_once_and_a_repeat_racing_its_original_gets_the_same_ack() {
    // On SQLite these commit in groups: a message and its resend, sent at once on two
    // connections, may land in the same transaction, where the second must see the first.
    for engine in support::ENGINES {
        let harness = Harness::start(engine, IPF_DOMAIN).await;
        let before = harness.counts().await;
        let messages: Vec<String> =
            (0..24).map(|n| adt_a01(&harness.patient(&format!("C{n}")), &format!("CONC{n}"))).collect();
        // Every message twice, each copy on a connection of its own, all at once.
        let frames: Vec<Vec<u8>> = messages.iter().chain(&messages).map(|message| frame(message)).collect();
        let sends = frames.iter().map(|bytes| raw(&harness, bytes, 1));
        let answers: Vec<String> = futures::future::join_all(sends).await.into_iter().flatten().collect();
        assert_eq!(answers.len(), 48);
        for (n, (first, second)) in answers[..24].iter().zip(&answers[24..]).enumerate() {
            assert_eq!(msa_code(first), "AA", "{engine:?}: {first}");
            assert_eq!(msa_field(first, 2), format!("CONC{n}"));
            assert_eq!(first, second, "{engine:?}: the resend gets the recorded ACK, byte for byte");
        }
        assert_eq!(harness.counts().await.patients, before.patients + 24, "{engine:?}: each patient once");
    }
}

#[tokio::test]
async fn refusals_get_the_codes_of_iti_tf_2x_c23() {
    let harness = Harness::start(Engine::Sqlite, IPF_DOMAIN).await;
    let p1 = harness.patient("P1");
    // ADT^A02 is not an ITI-8 event: AR, ERR-3 201.
    let transfer = adt_a01(&p1, "T1").replace("ADT^A01", "ADT^A02").replace("EVN|A01", "EVN|A02");
    let ack = harness.mllp_send(&transfer).await;
    assert_eq!((msa_code(&ack), err_code(&ack)), ("AR".to_owned(), "201".to_owned()), "{ack}");
    // Not ADT at all: AR 200.
    let order = adt_a01(&p1, "T2").replace("ADT^A01", "ORM^O01");
    let ack = harness.mllp_send(&order).await;
    assert_eq!((msa_code(&ack), err_code(&ack)), ("AR".to_owned(), "200".to_owned()), "{ack}");
    // No PID: AE 100.
    let no_pid = "MSH|^~\\&|PAS|HOSP|REGISTRY|HIE|20240102030405||ADT^A01|T3|P|2.3.1\rEVN|A01|20240102030405\r";
    let ack = harness.mllp_send(no_pid).await;
    assert_eq!((msa_code(&ack), err_code(&ack)), ("AE".to_owned(), "100".to_owned()), "{ack}");
    // A merge into itself: AE 205, nothing stored.
    harness.feed("P1").await;
    let before = harness.counts().await;
    let ack = harness.mllp_send(&adt_a40(&p1, &p1, "T4")).await;
    assert_eq!((msa_code(&ack), err_code(&ack)), ("AE".to_owned(), "205".to_owned()), "{ack}");
    assert_eq!(harness.counts().await.patients, before.patients);
    // Into a patient merged away: AE 205.
    harness.feed("P2").await;
    harness.feed("P3").await;
    let p2 = harness.patient("P2");
    assert_eq!(msa_code(&harness.mllp_send(&adt_a40(&p1, &p2, "T5")).await), "AA");
    let ack = harness.mllp_send(&adt_a40(&p2, &harness.patient("P3"), "T6")).await;
    assert_eq!((msa_code(&ack), err_code(&ack)), ("AE".to_owned(), "205".to_owned()), "{ack}");
    assert_eq!(harness.store.reg_patient(&harness.patient("P3")).await.unwrap().unwrap().merged_into, None);
    // A message with no affinity-domain id is accepted and changes nothing (ITI TF-2a 3.8.4.1.3).
    let before = harness.counts().await;
    let ack = harness.mllp_send(&adt_a01("LOCAL9^^^&1.2.3.4.5&ISO", "T7")).await;
    assert_eq!(msa_code(&ack), "AA");
    assert_eq!(harness.counts().await.patients, before.patients);
}

/// Raw MLLP: the ACK frames answered on one connection for `bytes`, read until `frames` came.
async fn raw(harness: &Harness, bytes: &[u8], frames: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(harness.mllp).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while received.iter().filter(|byte| **byte == 0x1c).count() < frames {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&received)
        .split('\u{1c}')
        .map(|frame| frame.trim_matches(['\u{b}', '\r', '\n']).to_owned())
        .filter(|frame| !frame.is_empty())
        .collect()
}

fn frame(message: &str) -> Vec<u8> {
    let mut bytes = vec![0x0b];
    bytes.extend_from_slice(message.as_bytes());
    bytes.extend_from_slice(&[0x1c, 0x0d]);
    bytes
}

#[tokio::test]
async fn the_listener_bounds_frames_connections_and_idle_time() {
    let mut config = RefRegistryConfig::new(Oid::parse(support::REPOSITORY).unwrap(), Oid::parse(IPF_DOMAIN).unwrap());
    config.feed.max_frame_bytes = 4096;
    config.feed.idle_timeout = Duration::from_millis(300);
    config.feed.max_connections = 2;
    let harness = Harness::start_with(Engine::Sqlite, config).await;

    // Garbage before the start block, then two messages in one write: two ACKs, in order.
    let mut bytes = b"garbage".to_vec();
    bytes.extend(frame(&adt_a01(&harness.patient("A"), "R1")));
    bytes.extend(frame(&adt_a01(&harness.patient("B"), "R2")));
    let acks = raw(&harness, &bytes, 2).await;
    assert_eq!(acks.iter().map(|ack| msa_field(ack, 2)).collect::<Vec<_>>(), ["R1", "R2"]);

    // A frame over the cap closes the connection without an ACK.
    let mut stream = TcpStream::connect(harness.mllp).await.unwrap();
    let mut big = vec![0x0b];
    big.extend(std::iter::repeat_n(b'A', 10_000));
    stream.write_all(&big).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "closed, nothing answered: {read:?}");

    // An idle connection is closed after the timeout.
    let mut idle = TcpStream::connect(harness.mllp).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buffer)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Over the connection cap: closed at once, the others still served.
    let _first = TcpStream::connect(harness.mllp).await.unwrap();
    let _second = TcpStream::connect(harness.mllp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(harness.mllp).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buffer)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn undecodable_input_is_answered_not_dropped() {
    let harness = Harness::start(Engine::Sqlite, IPF_DOMAIN).await;
    let cases: [&[u8]; 4] = [
        b"MSHH0\r",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|X1|P|9.9\rPID|1||P^^^&1.2&ISO\r",
        b"\xff\xfe\x00garbage",
        b"MSH|0|||||||00|||2.7",
    ];
    for input in cases {
        let mut bytes = vec![0x0b];
        bytes.extend_from_slice(input);
        bytes.extend_from_slice(&[0x1c, 0x0d]);
        let acks = raw(&harness, &bytes, 1).await;
        let code = msa_code(&acks[0]);
        assert!(code == "AR" || code == "AE", "{:?}: {}", String::from_utf8_lossy(input), acks[0]);
    }
    assert_eq!(harness.counts().await.patients, 0);
}
