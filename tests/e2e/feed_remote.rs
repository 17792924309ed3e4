//! The identity feed (ITI-8) to a remote MLLP receiver nobody here wrote: python-hl7's asyncio MLLP
//! server as a stand-in registry feed (`fixtures/python/feed_server.py`), which records what it
//! gets and answers by patient. The broker runs with `[registry] kind = "remote"`.
//!
//! - A01/A04 (as A01), A08 and A40 arrive in order, HL7 v2.3.1, PID-3 carrying the affinity
//!   domain's ID alone, and the merge's MRG-1 the merged patient's affinity-domain ID.
//! - An AR answer fails the item (and holds the patient's key); an AE answer is retried with the
//!   same control ID until accepted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hie_e2e::{BrokerOptions, BrokerProc, Engine, wait_until};
use serde_json::Value;

use crate::publishing::{AD_OID, Patient, send_adt};

/// The python-hl7 receiver; killed when dropped.
struct FeedServer {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl FeedServer {
    fn start(dir: &Path) -> FeedServer {
        let log = dir.join("feed.jsonl");
        let mut child = Command::new(hie_e2e::python())
            .arg(hie_e2e::fixture("python/feed_server.py"))
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start feed_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("READY line");
        let port = line
            .strip_prefix("READY ")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("feed_server.py did not start: {line:?}"));
        FeedServer { child, port, log }
    }

    /// What it received so far, in order.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remote_broker(feed_port: u16) -> BrokerProc {
    hie_e2e::init!();
    // Nothing listens at the registry's URLs: no study is published here, only patients fed.
    let nowhere = hie_e2e::free_addr();
    BrokerProc::start_with(
        BrokerOptions::new(Engine::Sqlite)
            .env("HIE_EDGE__REGISTRY__KIND", "remote")
            .env("HIE_EDGE__REGISTRY__REGISTRY_URL", &format!("https://{nowhere}/xds/registry"))
            .env("HIE_EDGE__REGISTRY__REPOSITORY_URL", &format!("https://{nowhere}/xds/repository"))
            .env("HIE_EDGE__REGISTRY__FEED", &format!("mllp://127.0.0.1:{feed_port}"))
            .env("HIE_EDGE__REGISTRY__FEED_RECEIVING_APPLICATION", "STANDIN_REG")
            .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0")
            .env("HIE_EDGE__STORE__OUTBOX_BACKOFF_BASE_MS", "200")
            .env("HIE_EDGE__STORE__OUTBOX_BACKOFF_MAX_SECS", "1"),
    )
}

/// The outbox's identity feed items (`/api/outbox`), oldest first.
fn feed_items(broker: &BrokerProc) -> Vec<Value> {
    let mut items: Vec<Value> = broker
        .get_json("/api/outbox?limit=1000")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|item| item["topic"] == "iti8")
        .collect();
    items.sort_by_key(|item| item["id"].as_i64());
    items
}

fn wait_received(server: &FeedServer, broker: &BrokerProc, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "{what}; received: {:#}\noutbox: {:#}",
                Value::Array(server.received()),
                Value::Array(feed_items(broker))
            )
        },
        || {
            let received = server.received();
            done(&received).then_some(received)
        },
    )
}

fn is_for(message: &Value, patient: &Patient) -> bool {
    message["pid3"].as_str().is_some_and(|pid3| pid3.starts_with(patient.ad_id.as_deref().unwrap_or("?")))
}

#[test]
fn creations_updates_and_merges_arrive_in_order_with_the_affinity_domain_id_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = FeedServer::start(dir.path());
    let broker = remote_broker(server.port);
    let (survivor, merged) = (Patient::new("SURV"), Patient::new("GONE"));
    send_adt(&broker, &survivor.adt("A01", true));
    send_adt(&broker, &merged.adt("A04", true));
    let mut renamed = survivor.clone();
    renamed.name = "SURV^Renamed".to_owned();
    send_adt(&broker, &renamed.adt("A08", true));
    let merge = hie_e2e::hl7(&[
        &format!(
            "MSH|^~\\&|E2E_RIS|E2E_HOSP|HIE_EDGE|HIE_EDGE|20261201090000||ADT^A40^ADT_A39|{}|P|2.5",
            hie_e2e::control_id("MRG")
        ),
        "EVN|A40|20261201090000",
        &format!(
            "PID|1||{}^^^{}^MR~{}^^^IHEBLUE&{AD_OID}&ISO^PI||SURV^Renamed||19780324|M",
            survivor.mrn,
            crate::publishing::LOCAL_AUTHORITY,
            survivor.ad_id.as_deref().unwrap_or_default()
        ),
        &format!("MRG|{}^^^{}^MR", merged.mrn, crate::publishing::LOCAL_AUTHORITY),
    ]);
    send_adt(&broker, &merge);

    let received = wait_received(&server, &broker, "four feed messages", |received| received.len() >= 4);
    assert_eq!(received.len(), 4, "{received:#?}");
    let types: Vec<&str> = received.iter().map(|message| message["type"].as_str().unwrap_or_default()).collect();
    let of_survivor: Vec<&Value> = received.iter().filter(|message| is_for(message, &survivor)).collect();
    let survivor_types: Vec<&str> =
        of_survivor.iter().map(|message| message["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(survivor_types, ["ADT^A01", "ADT^A08", "ADT^A40^ADT_A39"], "the survivor's feed in order: {types:?}");
    let merged_at = received.iter().position(|message| is_for(message, &merged)).expect("the merged patient's A01");
    let merge_at = received.iter().position(|message| message["type"] == "ADT^A40^ADT_A39").expect("the A40");
    assert!(merged_at < merge_at, "the merge comes after both patients' feeds: {types:?}");
    assert_eq!(received[merged_at]["type"], "ADT^A01", "an A04 is fed as A01");
    for message in &received {
        assert_eq!(message["version"], "2.3.1", "ITI-8 is HL7 v2.3.1");
        let pid3 = message["pid3"].as_str().unwrap_or_default();
        assert!(!pid3.contains('~') && pid3.contains(AD_OID), "PID-3 carries one identifier, the AD ID: {pid3}");
        assert!(!pid3.contains(&survivor.mrn) && !pid3.contains(&merged.mrn), "no MRN in PID-3: {pid3}");
        assert!(message["raw"].as_str().unwrap_or_default().contains("|STANDIN_REG|"), "MSH-5 as configured");
        assert_eq!(message["code"], "AA");
    }
    assert_eq!(of_survivor[1]["pid5"], "SURV^Renamed", "the update carries the new name");
    let mrg1 = received[merge_at]["mrg1"].as_str().unwrap_or_default();
    assert!(mrg1.starts_with(merged.ad_id.as_deref().unwrap_or("?")) && mrg1.contains(AD_OID), "MRG-1: {mrg1}");
    assert!(!mrg1.contains(&merged.mrn), "MRG-1 carries no MRN: {mrg1}");
    wait_until(
        Duration::from_secs(30),
        || format!("every feed item done: {:#}", Value::Array(feed_items(&broker))),
        || feed_items(&broker).iter().all(|item| item["state"] == "done").then_some(()),
    );
}

#[test]
fn an_ar_fails_the_item_and_an_ae_is_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = FeedServer::start(dir.path());
    let broker = remote_broker(server.port);
    let mut refused = Patient::new("REFUSE");
    refused.name = "REFUSE^Pat".to_owned();
    let mut flaky = Patient::new("FLAKY");
    flaky.name = "FLAKY^Pat".to_owned();
    send_adt(&broker, &refused.adt("A04", true));
    send_adt(&broker, &flaky.adt("A04", true));

    // AE twice, then AA: the same message, the same control ID, three times.
    let received = wait_received(&server, &broker, "the flaky patient's feed accepted", |received| {
        received.iter().any(|message| is_for(message, &flaky) && message["code"] == "AA")
    });
    let flaky_messages: Vec<&Value> = received.iter().filter(|message| is_for(message, &flaky)).collect();
    let codes: Vec<&str> = flaky_messages.iter().map(|message| message["code"].as_str().unwrap_or_default()).collect();
    assert_eq!(codes, ["AE", "AE", "AA"], "{flaky_messages:#?}");
    assert!(flaky_messages.iter().all(|message| message["control_id"] == flaky_messages[0]["control_id"]));

    // AR: refused once, for good.
    let refused_messages: Vec<&Value> = received.iter().filter(|message| is_for(message, &refused)).collect();
    assert_eq!(refused_messages.len(), 1, "{refused_messages:#?}");
    assert_eq!(refused_messages[0]["code"], "AR");
    let items = wait_until(
        Duration::from_secs(30),
        || format!("the refused item failed: {:#}", Value::Array(feed_items(&broker))),
        || {
            let items = feed_items(&broker);
            items.iter().any(|item| item["state"] == "failed").then_some(items)
        },
    );
    let failed: Vec<&Value> = items.iter().filter(|item| item["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{items:#?}");
    assert_eq!(failed[0]["attempts"], 1, "no retry after AR");
    assert!(failed[0]["last_error"].as_str().unwrap_or_default().contains("AR"), "{:#}", failed[0]);
    let flaky_item = items.iter().find(|item| item["state"] == "done").expect("the flaky item done");
    assert_eq!(flaky_item["attempts"], 3, "{flaky_item:#}");
    assert_eq!(flaky_messages[0]["control_id"], format!("HIEF{}", flaky_item["id"]), "MSH-10 follows the item");

    // The refused patient's next feed waits behind the failed one (the key holds) ...
    let mut renamed = refused.clone();
    renamed.name = "REFUSE^Renamed".to_owned();
    send_adt(&broker, &renamed.adt("A08", true));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.received().iter().filter(|message| is_for(message, &refused)).count(), 1, "nothing overtakes AR");
    // ... until an operator retries it; the stand-in refuses it again.
    let (status, body) = broker.post(&format!("/api/outbox/{}/retry", failed[0]["id"]));
    assert_eq!(status, 200, "{body}");
    let received = wait_received(&server, &broker, "the retried AR", |received| {
        received.iter().filter(|message| is_for(message, &refused)).count() >= 2
    });
    assert_eq!(received.iter().filter(|message| is_for(message, &refused) && message["code"] == "AR").count(), 2);
}
