//! Every HL7 ADT fixture of `tests/fixtures/hl7/` sent by python-hl7 (a client nobody here wrote),
//! with the expected ACK per fixture decided from the HL7 standard and the team's rules (not from
//! what the broker answers), the identities checked through `/api/patients`, the repeat of each
//! message (same MSH-10) checked idempotent; plus the merge rules and enhanced mode over the wire.
//!
//! Clients: the first send uses `mllp_send --loose` (python-hl7's CLI), which re-frames the file on
//! `MSH|^~\&|` and turns CRLF/LF into CR. The repeat uses `mllp_raw_send.py` (python-hl7's
//! `MLLPClient` with the file's bytes unchanged), so CRLF, LF and BOM fixtures also reach the broker
//! as they are. Two kinds of fixture use the raw client for both sends: the UTF-8 BOM one (mllp_send
//! would send the BOM as a bogus message of its own, then the message without it) and MSH-15/16 =
//! NE/NE (no reply at all, and mllp_send has no timeout).
//!
//! Each fixture runs on its own broker: several fixtures share sender + MSH-10 (e.g. the five MSFC
//! `ADTApp|GHHSFacility` files are all `MSG00001`), and the broker rightly treats a second one as a
//! repeat.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hie_e2e::{
    BrokerProc, Engine, ack_code, adt, control_id, field, fixture, run_with_timeout, split_frames, venv_bin,
};
use serde_json::Value;

use crate::{IPF_MPI_OID, broker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The first reply frame on the connection carries this MSA-1.
    Ack(&'static str),
    /// No reply frame at all (MSH-15 and MSH-16 = NE).
    NoAck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// `mllp_send --loose` first, raw bytes for the repeat.
    MllpSendLoose,
    /// Raw bytes (python-hl7 `MLLPClient`) for both sends.
    Raw,
}

#[derive(Debug, Clone, Copy)]
enum Check {
    /// A patient is found by `cx` and its identifiers include each of these CX-1 values.
    Found(&'static str, &'static [&'static str]),
    /// The patient found by `cx` has an affinity domain id whose CX-1 is this value.
    Affinity(&'static str, &'static str),
    /// The patient found by the first CX (the prior) has `merged_into` naming the patient found by
    /// the second (the survivor): any one of the survivor's identifiers.
    MergedInto(&'static str, &'static str),
    /// The patient found by `cx` does not list an identifier with this CX-1.
    NotListed(&'static str, &'static str),
}

#[derive(Debug)]
struct Case {
    file: &'static str,
    expect: Expect,
    reason: &'static str,
    client: Client,
    /// PID-3 of patients created (A04 from the test sender) before the fixture: for merges both the
    /// prior and the survivor, so the expected outcome (prior merged into survivor) is unambiguous.
    setup: &'static [&'static str],
    checks: &'static [Check],
}

const MPI: &str = "&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO";

macro_rules! mpi {
    ($id:literal) => {
        concat!($id, "^^^&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO")
    };
}

/// A bare PID-3 (no assigning authority) lands in the configured local authority
/// ([`crate::LOCAL_AUTHORITY`]); looked up by its OID.
macro_rules! local {
    ($id:literal) => {
        concat!($id, "^^^&1.2.3.4.5.6.7&ISO")
    };
}

const AA_ADT: &str = "supported ADT event, well-formed enough to identify the patient: original mode, AA after commit";

/// The fixture -> expected ACK table. Reasons say why, from the standard or the team's rules.
const CASES: &[Case] = &[
    Case {
        file: "dcm4che-ADT_A31-UpdatePersonInfo-v251.hl7",
        expect: Expect::Ack("AA"),
        reason: "A31 update, v2.5.1, MSH-18 8859/1; EVN is missing (required by ADT_A05) but not needed for identity, so accepted as dcm4chee does",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("PID_1^^^ADT1", &["PID_1"])],
    },
    Case {
        file: "dcm4che-ADT_A40-PatientMerge-v251.hl7",
        expect: Expect::Ack("AA"),
        reason: "A40 merge OLD_PID_1 into NEW_PID_1 (both created first); NTE between PID and MRG is tolerated",
        client: Client::MllpSendLoose,
        setup: &["OLD_PID_1^^^ADT1", "NEW_PID_1^^^ADT1"],
        checks: &[
            Check::MergedInto("OLD_PID_1^^^ADT1", "NEW_PID_1^^^ADT1"),
            Check::Found("NEW_PID_1^^^ADT1", &["NEW_PID_1"]),
        ],
    },
    Case {
        file: "dcm4che-ADT_A47-ChangePatientID-v251.hl7",
        expect: Expect::Ack("AA"),
        reason: "A47 changes the identifier OLD_PID_1 (created first) to NEW_PID_1",
        client: Client::MllpSendLoose,
        setup: &["OLD_PID_1^^^ADT1"],
        checks: &[Check::Found("NEW_PID_1^^^ADT1", &["NEW_PID_1"]), Check::NotListed("NEW_PID_1^^^ADT1", "OLD_PID_1")],
    },
    Case {
        file: "ipf-iti10-A31-v25.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("13278^^^HIMSS2005&1.3.6.1.4.1.21367.2005.1.1&ISO", &["13278", "02777", "5555"])],
    },
    Case {
        file: "ipf-iti8-A40-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: "ITI-8 A40; MRG-1 has 2 repetitions, the first without assigning authority: the prior resolves through the second (prior and survivor created first)",
        client: Client::MllpSendLoose,
        setup: &[
            "7200117359^^^BBB&2.16.840.1.113883.3.37.4.1.1.2.611.1&ISO",
            "305014^^^MPI-NS-P&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO",
        ],
        checks: &[
            Check::MergedInto("7200117359^^^BBB&2.16.840.1.113883.3.37.4.1.1.2.611.1&ISO", mpi!("305014")),
            Check::Affinity(mpi!("305014"), "305014"),
        ],
    },
    Case {
        file: "ipf-msg01-A01-v22-utf8.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.2, UTF-8 bytes; MSH-15=ER, MSH-16 empty: enhanced mode, no accept ACK on success (ER), application ACK AA (empty MSH-16 taken as AL); MSH-11=T is not filtered",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(local!("79471"), &["79471"])],
    },
    Case {
        file: "ipf-msg01-A01-v22.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.2; MSH-15=ER, MSH-16 empty: no CA on success, then AA",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(local!("79471"), &["79471"])],
    },
    Case {
        file: "ipf-msg06-A01-v25.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.5; MSH-15=ER, MSH-16 empty: no CA on success, then AA",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(local!("79471"), &["79471"])],
    },
    Case {
        file: "ipf-msg07-A08-v25.hl7",
        expect: Expect::Ack("AA"),
        reason: "A08 v2.5 (EVN-1 says A01: MSH-9 decides, EVN-1 is informational); MSH-15=ER: no CA, then AA",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(local!("79471"), &["79471"])],
    },
    Case {
        file: "ipf-pixfeed-A01-maximal-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(
            "PIX10515W3^^^HIMSS2005&1.3.6.1.4.1.21367.2005.1.1&ISO",
            &["PIX10515W3", "PIX10515W4", "PIX10515W5"],
        )],
    },
    Case {
        file: "ipf-pixfeed-A40-maximal-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: "A40 merge 120-02 into 120-01 (both created first)",
        client: Client::MllpSendLoose,
        setup: &["120-02^^^domain1&1.2.3.4.666&ISO", "120-01^^^&1.2.3.4.5.1000&ISO"],
        checks: &[Check::MergedInto("120-02^^^domain1&1.2.3.4.666&ISO", "120-01^^^&1.2.3.4.5.1000&ISO")],
    },
    Case {
        file: "ipf-pixsource-A01-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01; the first PID-3 repetition is the HL7 null \"\" and is not an identifier",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[
            Check::Found(mpi!("306563"), &["306563", "30753"]),
            Check::Affinity(mpi!("306563"), "306563"),
            Check::NotListed(mpi!("306563"), "\"\""),
        ],
    },
    Case {
        file: "ipf-pixsource-A01-with-BR-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[
            Check::Found("30753^^^KHKN&2.16.840.1.113883.3.37.4.1.1.2.611.1&ISO", &["306563", "30753"]),
            Check::Affinity(mpi!("306563"), "306563"),
        ],
    },
    Case {
        file: "ipf-pixsource-A04-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[
            Check::Found(mpi!("305090"), &["305090", "13278", "02777"]),
            Check::Affinity(mpi!("305090"), "305090"),
        ],
    },
    Case {
        file: "ipf-pixsource-A08-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: "A08 of an unknown patient creates it (no prior A01 needed); \"\" repetition ignored",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found(mpi!("306567"), &["306567"]), Check::NotListed(mpi!("306567"), "\"\"")],
    },
    Case {
        file: "ipf-pixsource-A40-v231.hl7",
        expect: Expect::Ack("AA"),
        reason: "A40 merge 704686 into 142025 (both created first), both in the affinity domain",
        client: Client::MllpSendLoose,
        setup: &[
            "704686^^^130&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO",
            "142025^^^130&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO",
        ],
        checks: &[Check::MergedInto(mpi!("704686"), mpi!("142025"))],
    },
    Case {
        file: "ipf-pixupdate-A31-v25.hl7",
        expect: Expect::Ack("AA"),
        reason: "A31 with two identifiers; PID-5 is a single space (valued), fine",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("01^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO", &["01", "LOCAL01"])],
    },
    Case {
        file: "msfc-ADT-A01-01-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.8, LF segment ends, \\T\\ escapes, many optional segments; MSH-9.3 is not used for dispatch",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
    Case {
        file: "msfc-ADT-A01-02-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.8 whose last segment is cut short: still a parseable message",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
    Case {
        file: "msfc-ADT-A04-01-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: "A04 v2.8 (non-standard MSH-9.3 ADT_A04 ignored; trigger event decides)",
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
    Case {
        file: "msfc-ADT-A08-01-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
    Case {
        file: "msfc-ADT-A31-01-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: AA_ADT,
        client: Client::MllpSendLoose,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
    Case {
        file: "msfc-ADT-A40-01-v28.hl7",
        expect: Expect::NoAck,
        reason: "MSH-15=NE and MSH-16=NE: enhanced mode, the sender wants no ACK at all; the merge is still applied",
        client: Client::Raw,
        setup: &["56789^^^BCBS", "12345^^^BCBS"],
        checks: &[Check::MergedInto("56789^^^BCBS", "12345^^^BCBS")],
    },
    Case {
        file: "msfc-ADT-A40-02-v28.hl7",
        expect: Expect::NoAck,
        reason: "NE/NE, no ACK; two PID/MRG groups in one A40 (the PATIENT group repeats): both merges applied",
        client: Client::Raw,
        setup: &["56789^^^BCBS", "12345^^^BCBS", "569^^^BCBS", "145^^^BCBS"],
        checks: &[Check::MergedInto("56789^^^BCBS", "12345^^^BCBS"), Check::MergedInto("569^^^BCBS", "145^^^BCBS")],
    },
    Case {
        file: "msfc-ADT-A47-01-v28.hl7",
        expect: Expect::Ack("AA"),
        reason: "A47 changes MR102 (created first) to MR101",
        client: Client::MllpSendLoose,
        setup: &["MR102^^^BCBS"],
        checks: &[
            Check::Found("MR101^^^GOOD HEALTH HOSPITAL", &["MR101"]),
            Check::NotListed("MR101^^^GOOD HEALTH HOSPITAL", "MR102"),
        ],
    },
    Case {
        file: "msfc-ADT01-28-v251.hl7",
        expect: Expect::Ack("AA"),
        reason: "A01 v2.5.1 with a UTF-8 BOM before MSH and LF segment ends: the BOM is skipped",
        client: Client::Raw,
        setup: &[],
        checks: &[Check::Found("123456789^^^USSSA", &["PATID1234", "123456789"])],
    },
];

fn case(file: &str) -> &'static Case {
    CASES.iter().find(|c| c.file == file).unwrap_or_else(|| panic!("no row for {file} in CASES"))
}

/// Reply frames of one send of `file`, by `mllp_send --loose` or by the raw python-hl7 client.
fn python_send(b: &BrokerProc, file: &Path, loose: bool, expect: Expect) -> Vec<Vec<u8>> {
    let port = b.mllp.port().to_string();
    let (mut cmd, timeout) = if loose {
        let mut c = Command::new(venv_bin("mllp_send"));
        c.arg("--loose").arg("--file").arg(file).args(["-p", &port, "127.0.0.1"]);
        (c, Duration::from_secs(60))
    } else {
        // NE/NE: wait long enough that a wrongly sent ACK would show up.
        let wait = if expect == Expect::NoAck { "2" } else { "30" };
        let mut c = Command::new(hie_e2e::python());
        c.arg(fixture("python/mllp_raw_send.py")).arg("--file").arg(file).args([
            "--port",
            &port,
            "--timeout",
            wait,
            "--frames",
            "1",
        ]);
        (c, Duration::from_secs(60))
    };
    let (ok, out, err) = run_with_timeout(&mut cmd, timeout);
    assert_eq!(
        ok,
        Some(true),
        "python client for {} failed or hung: {err}\nbroker stderr tail:\n{}",
        file.display(),
        b.stderr_tail(30)
    );
    split_frames(&out)
}

fn ids_of(p: &Value) -> Vec<String> {
    p["identifiers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn cx1(cx: &str) -> &str {
    cx.split('^').next().unwrap_or(cx)
}

/// The OID (or namespace) part of a CX's assigning authority, for loose comparison.
fn cx_oid(cx: &str) -> &str {
    let hd = cx.split('^').nth(3).unwrap_or_default();
    hd.split('&').nth(1).filter(|o| !o.is_empty()).unwrap_or(hd)
}

fn has_id(p: &Value, id: &str) -> bool {
    ids_of(p).iter().any(|c| cx1(c) == id)
}

/// Checks one identity expectation; Err(reason) so NE/NE cases can poll.
fn check(b: &BrokerProc, c: &Check) -> Result<(), String> {
    let one = |cx: &str| -> Result<Value, String> {
        let found = b.patients(cx);
        match found.len() {
            1 => Ok(found.into_iter().next().unwrap_or_default()),
            n => Err(format!("{n} patients for {cx}: {found:?}")),
        }
    };
    match *c {
        Check::Found(cx, ids) => {
            let p = one(cx)?;
            for id in ids {
                if !has_id(&p, id) {
                    return Err(format!("patient for {cx} lacks identifier {id}: {p}"));
                }
            }
        }
        Check::Affinity(cx, id) => {
            let p = one(cx)?;
            let ad = p["affinity_domain_id"].as_str().unwrap_or_default();
            if cx1(ad) != id || !ad.contains(crate::IPF_MPI_OID) {
                return Err(format!("affinity_domain_id of {cx} is not {id}{MPI}: {p}"));
            }
        }
        Check::MergedInto(prior, survivor) => {
            let p = one(prior)?;
            let m = p["merged_into"].as_str().unwrap_or_default();
            let s = one(survivor)?;
            if m.is_empty() || !ids_of(&s).iter().any(|c| c == m || cx1(c) == cx1(m) && c.contains(cx_oid(m))) {
                return Err(format!("{prior} is not merged into the patient of {survivor}: {p}\nsurvivor: {s}"));
            }
        }
        Check::NotListed(cx, id) => {
            let p = one(cx)?;
            if has_id(&p, id) {
                return Err(format!("patient for {cx} still lists {id}: {p}"));
            }
        }
    }
    Ok(())
}

fn check_all(b: &BrokerProc, c: &Case, poll: bool) {
    let deadline = Instant::now() + Duration::from_secs(if poll { 15 } else { 0 });
    for chk in c.checks {
        loop {
            match check(b, chk) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => panic!("{}: {e}", c.file),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

fn check_cx(c: &Check) -> &'static str {
    match *c {
        Check::Found(cx, _) | Check::Affinity(cx, _) | Check::MergedInto(cx, _) | Check::NotListed(cx, _) => cx,
    }
}

/// Total history entries of the patients the checks look at.
fn history_len(b: &BrokerProc, c: &Case) -> usize {
    c.checks
        .iter()
        .map(|chk| b.patients(check_cx(chk)).iter().map(|p| p["history"].as_array().map_or(0, Vec::len)).sum::<usize>())
        .sum()
}

fn assert_reply(c: &Case, frames: &[Vec<u8>], which: &str, b: &BrokerProc) {
    let text: Vec<String> = frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    match c.expect {
        Expect::NoAck => {
            assert!(frames.is_empty(), "{} ({which}): expected no ACK ({}), got {text:?}", c.file, c.reason)
        }
        Expect::Ack(code) => {
            let first = frames
                .first()
                .unwrap_or_else(|| panic!("{} ({which}): no ACK; broker stderr tail:\n{}", c.file, b.stderr_tail(30)));
            assert_eq!(
                ack_code(first),
                code,
                "{} ({which}): expected {code} because {}; got {text:?}",
                c.file,
                c.reason
            );
            let raw = std::fs::read(fixture(&format!("hl7/{}", c.file))).expect("fixture");
            let raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&raw);
            assert_eq!(field(first, "MSA", 2), field(raw, "MSH", 10), "{} ({which}): MSA-2 must echo MSH-10", c.file);
        }
    }
}

/// Sends a fixture twice to a fresh broker and checks ACKs, identities and idempotence.
fn run_case(engine: Engine, file: &str) {
    let c = case(file);
    let b = broker(engine);
    for (i, pid3) in c.setup.iter().enumerate() {
        let ack = b.send(&adt("A04", &control_id(&format!("setup{i}")), pid3, None)).expect("setup A04");
        assert_eq!(ack_code(&ack), "AA", "setup A04 {pid3}: {}", String::from_utf8_lossy(&ack));
    }
    let path = fixture(&format!("hl7/{file}"));
    let first = python_send(&b, &path, c.client == Client::MllpSendLoose, c.expect);
    assert_reply(c, &first, "first send", &b);
    check_all(&b, c, c.expect == Expect::NoAck);
    let before = history_len(&b, c);

    let again = python_send(&b, &path, false, c.expect);
    assert_reply(c, &again, "repeat, same MSH-10", &b);
    if c.expect == Expect::NoAck {
        // No ACK to wait for: give a wrongly re-applied repeat time to land before comparing.
        std::thread::sleep(Duration::from_millis(500));
    }
    check_all(&b, c, false);
    assert_eq!(history_len(&b, c), before, "{file}: the repeat (same sender + MSH-10) was applied again");
    assert!(b.healthy(), "{file}: broker unhealthy afterwards");
}

macro_rules! fixture_tests {
    ($engine:expr, $all:ident, $($name:ident => $file:literal),* $(,)?) => {
        const $all: &[&str] = &[$($file),*];
        $(
            #[test]
            fn $name() {
                run_case($engine, $file);
            }
        )*
    };
}

mod sqlite {
    use super::*;
    fixture_tests!(Engine::Sqlite, ALL,
        dcm4che_a31 => "dcm4che-ADT_A31-UpdatePersonInfo-v251.hl7",
        dcm4che_a40 => "dcm4che-ADT_A40-PatientMerge-v251.hl7",
        dcm4che_a47 => "dcm4che-ADT_A47-ChangePatientID-v251.hl7",
        ipf_iti10_a31 => "ipf-iti10-A31-v25.hl7",
        ipf_iti8_a40 => "ipf-iti8-A40-v231.hl7",
        ipf_msg01_a01_v22_utf8 => "ipf-msg01-A01-v22-utf8.hl7",
        ipf_msg01_a01_v22 => "ipf-msg01-A01-v22.hl7",
        ipf_msg06_a01 => "ipf-msg06-A01-v25.hl7",
        ipf_msg07_a08 => "ipf-msg07-A08-v25.hl7",
        ipf_pixfeed_a01_maximal => "ipf-pixfeed-A01-maximal-v231.hl7",
        ipf_pixfeed_a40_maximal => "ipf-pixfeed-A40-maximal-v231.hl7",
        ipf_pixsource_a01 => "ipf-pixsource-A01-v231.hl7",
        ipf_pixsource_a01_with_br => "ipf-pixsource-A01-with-BR-v231.hl7",
        ipf_pixsource_a04 => "ipf-pixsource-A04-v231.hl7",
        ipf_pixsource_a08 => "ipf-pixsource-A08-v231.hl7",
        ipf_pixsource_a40 => "ipf-pixsource-A40-v231.hl7",
        ipf_pixupdate_a31 => "ipf-pixupdate-A31-v25.hl7",
        msfc_a01_01 => "msfc-ADT-A01-01-v28.hl7",
        msfc_a01_02 => "msfc-ADT-A01-02-v28.hl7",
        msfc_a04_01 => "msfc-ADT-A04-01-v28.hl7",
        msfc_a08_01 => "msfc-ADT-A08-01-v28.hl7",
        msfc_a31_01 => "msfc-ADT-A31-01-v28.hl7",
        msfc_a40_01 => "msfc-ADT-A40-01-v28.hl7",
        msfc_a40_02 => "msfc-ADT-A40-02-v28.hl7",
        msfc_a47_01 => "msfc-ADT-A47-01-v28.hl7",
        msfc_adt01_28_bom => "msfc-ADT01-28-v251.hl7",
    );

    /// Every file in the fixture folder has a row in CASES and a test here: none skipped silently.
    #[test]
    fn every_fixture_is_covered() {
        let mut files: Vec<String> = std::fs::read_dir(fixture("hl7"))
            .expect("fixtures/hl7")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        files.sort();
        for f in &files {
            let _ = case(f);
            assert!(ALL.contains(&f.as_str()), "{f} has no SQLite test");
        }
        assert_eq!(files.len(), CASES.len(), "CASES has rows for missing files");
    }
}

mod postgres {
    use super::*;
    // A subset on PostgreSQL: charsets, BOM, a big v2.8 message, and every merge fixture.
    fixture_tests!(Engine::Postgres, ALL,
        dcm4che_a31 => "dcm4che-ADT_A31-UpdatePersonInfo-v251.hl7",
        ipf_msg01_a01_v22_utf8 => "ipf-msg01-A01-v22-utf8.hl7",
        ipf_pixsource_a04 => "ipf-pixsource-A04-v231.hl7",
        msfc_a01_01 => "msfc-ADT-A01-01-v28.hl7",
        msfc_adt01_28_bom => "msfc-ADT01-28-v251.hl7",
        dcm4che_a40 => "dcm4che-ADT_A40-PatientMerge-v251.hl7",
        ipf_iti8_a40 => "ipf-iti8-A40-v231.hl7",
        ipf_pixfeed_a40_maximal => "ipf-pixfeed-A40-maximal-v231.hl7",
        ipf_pixsource_a40 => "ipf-pixsource-A40-v231.hl7",
        msfc_a40_01 => "msfc-ADT-A40-01-v28.hl7",
        msfc_a40_02 => "msfc-ADT-A40-02-v28.hl7",
    );

    #[test]
    fn subset_is_listed() {
        assert!(ALL.iter().all(|f| CASES.iter().any(|c| c.file == *f)));
    }
}

// ---- merge rules and acknowledgement modes, with messages built here ----

fn send_ok(b: &BrokerProc, msg: &[u8]) -> Vec<u8> {
    b.send(msg).unwrap_or_else(|e| panic!("no ACK ({e}); broker stderr tail:\n{}", b.stderr_tail(30)))
}

fn a04(b: &BrokerProc, pid3: &str) {
    let ack = send_ok(b, &adt("A04", &control_id("a04"), pid3, None));
    assert_eq!(ack_code(&ack), "AA", "A04 {pid3}: {}", String::from_utf8_lossy(&ack));
}

fn a40(b: &BrokerProc, survivor: &str, prior: &str) -> Vec<u8> {
    send_ok(b, &adt("A40", &control_id("a40"), survivor, Some(prior)))
}

fn assert_err(ack: &[u8], code: &str, err3: &str, err2_prefix: &str, why: &str) {
    let text = String::from_utf8_lossy(ack);
    assert_eq!(ack_code(ack), code, "{why}: {text}");
    let e3 = field(ack, "ERR", 3).unwrap_or_default();
    assert_eq!(cx1(&e3), err3, "{why}: ERR-3 (table 0357) in {text}");
    let e2 = field(ack, "ERR", 2).unwrap_or_default();
    assert!(e2.starts_with(err2_prefix), "{why}: ERR-2 {e2:?} should start with {err2_prefix}: {text}");
}

fn merged_into(b: &BrokerProc, cx: &str) -> Option<String> {
    let p = b.patients(cx);
    assert_eq!(p.len(), 1, "{cx}: {p:?}");
    p[0]["merged_into"].as_str().map(str::to_owned)
}

fn pid(ns: &str, id: &str) -> String {
    format!("{id}^^^{ns}")
}

fn merge_rules(engine: Engine) {
    let b = broker(engine);
    let ns = format!("E2E{}", hie_e2e::unique_suffix());
    let p = |id: &str| pid(&ns, id);

    // MRG-1 equal to PID-3.
    a04(&b, &p("SELF"));
    let ack = a40(&b, &p("SELF"), &p("SELF"));
    assert_err(&ack, "AR", "205", "MRG^1^1", "MRG-1 = PID-3");

    // Two identifiers of one patient: merging one into the other is a merge into itself.
    a04(&b, &format!("{}~{}", p("TWIN1"), pid(&format!("{ns}B"), "TWIN2")));
    let ack = a40(&b, &p("TWIN1"), &pid(&format!("{ns}B"), "TWIN2"));
    assert_err(&ack, "AR", "205", "MRG^1^1", "self merge through two identifiers");

    // A cycle: A into B, B into C, then C into A.
    for x in ["A", "B", "C"] {
        a04(&b, &p(x));
    }
    assert_eq!(ack_code(&a40(&b, &p("B"), &p("A"))), "AA", "A into B");
    assert_eq!(ack_code(&a40(&b, &p("C"), &p("B"))), "AA", "B into C");
    let ack = a40(&b, &p("A"), &p("C"));
    assert_err(&ack, "AR", "205", "MRG^1^1", "C into A closes a cycle");
    assert_eq!(merged_into(&b, &p("C")), None, "C stays the survivor");
    assert!(merged_into(&b, &p("A")).is_some() && merged_into(&b, &p("B")).is_some());

    // Inverse duplicate and repeated identical merge (new MSH-10 each): AA, no-op.
    a04(&b, &p("P"));
    a04(&b, &p("Q"));
    assert_eq!(ack_code(&a40(&b, &p("P"), &p("Q"))), "AA", "Q into P");
    // State, not history, is compared: the broker may note the ignored duplicate in history.
    let state = |cx: &str| {
        let p = b.patients(cx);
        (p[0]["identifiers"].clone(), p[0]["merged_into"].clone())
    };
    let (sp, sq) = (state(&p("P")), state(&p("Q")));
    assert_eq!(ack_code(&a40(&b, &p("P"), &p("Q"))), "AA", "same merge again");
    assert_eq!(ack_code(&a40(&b, &p("Q"), &p("P"))), "AA", "inverse duplicate");
    assert_eq!(merged_into(&b, &p("P")), None, "P stays the survivor");
    assert_eq!(merged_into(&b, &p("Q")).as_deref().map(cx1), Some("P"), "Q stays merged into P");
    assert_eq!((state(&p("P")), state(&p("Q"))), (sp, sq), "no-op merges changed identities");

    // Update addressed to a patient merged away: record locked.
    let ack = send_ok(&b, &adt("A08", &control_id("a08"), &p("Q"), None));
    assert_err(&ack, "AR", "206", "PID^1^3", "A08 to a merged-away patient");

    // A40 before any A04: both unknown, accepted.
    let ack = a40(&b, &p("LATE-S"), &p("LATE-P"));
    assert_eq!(ack_code(&ack), "AA", "A40 with unknown prior: {}", String::from_utf8_lossy(&ack));
    assert!(!b.patients(&p("LATE-S")).is_empty(), "the survivor exists after A40");

    assert!(b.healthy());
}

#[test]
fn merge_rules_sqlite() {
    merge_rules(Engine::Sqlite);
}

#[test]
fn merge_rules_postgres() {
    merge_rules(Engine::Postgres);
}

#[test]
fn enhanced_mode_accept_then_application_ack() {
    let b = broker(Engine::Sqlite);
    let id = control_id("enh");
    let msg = hie_e2e::hl7(&[
        &format!("MSH|^~\\&|HIE-E2E|TEST|HIE-EDGE|HIE|20250101120000||ADT^A04^ADT_A01|{id}|P|2.5|||AL|AL"),
        "EVN|A04|20250101120000",
        &format!("PID|1||ENH-{id}^^^E2E||DOE^JANE||19700101|F"),
        "PV1|1|O",
    ]);
    let mut s = hie_e2e::mllp_connect(b.mllp, Duration::from_secs(10)).expect("connect");
    std::io::Write::write_all(&mut s, &hie_e2e::mllp_frame(&msg)).expect("send");
    let accept = hie_e2e::mllp_read_frame(&mut s, Duration::from_secs(30)).expect("accept ACK");
    let app = hie_e2e::mllp_read_frame(&mut s, Duration::from_secs(30)).expect("application ACK");
    assert_eq!(ack_code(&accept), "CA", "{}", String::from_utf8_lossy(&accept));
    assert_eq!(ack_code(&app), "AA", "{}", String::from_utf8_lossy(&app));
    assert_eq!(field(&accept, "MSA", 2).as_deref(), Some(id.as_str()));
    assert_eq!(field(&app, "MSA", 2).as_deref(), Some(id.as_str()));
    assert_eq!(b.patients(&format!("ENH-{id}^^^E2E")).len(), 1);
}

#[test]
fn unsupported_event_and_message_type() {
    let b = broker(Engine::Sqlite);
    // A60 is an ADT event the broker does not handle: 201 unsupported event code.
    let ack = send_ok(&b, &adt("A60", &control_id("a60"), "X1^^^E2E", None));
    assert_err(&ack, "AR", "201", "MSH^1^9", "ADT^A60");
    // ORU is not ADT: 200 unsupported message type.
    let id = control_id("oru");
    let oru = hie_e2e::hl7(&[
        &format!("MSH|^~\\&|HIE-E2E|TEST|HIE-EDGE|HIE|20250101120000||ORU^R01^ORU_R01|{id}|P|2.5"),
        "PID|1||X2^^^E2E||DOE^JANE",
        "OBR|1",
    ]);
    let ack = send_ok(&b, &oru);
    assert_err(&ack, "AR", "200", "MSH^1^9", "ORU^R01");
    assert_eq!(field(&ack, "MSA", 2).as_deref(), Some(id.as_str()));
}

#[test]
fn authority_consts_match() {
    assert_eq!(MPI, format!("&{IPF_MPI_OID}&ISO"));
    assert!(crate::LOCAL_AUTHORITY.ends_with("&1.2.3.4.5.6.7&ISO"));
}
