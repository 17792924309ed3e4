//! B-RAD69: retrieval through the broker beside direct retrieval from the same Orthanc, in one run.
//!
//! Orthanc (Debian) holds a generated CT study (500 instances of about 0.5 MB, written by pydicom
//! from the test venv and cloned with new UIDs). Measured, each a few times, the median kept:
//! - direct: curl WADO-RS of the whole study (`/dicom-web/studies/{uid}`), the same through
//!   stunnel with mutual TLS (the floor of what TLS costs a proxy), dcmtk `getscu` (C-GET) and
//!   `movescu` to a dcmtk `storescp` (C-MOVE);
//! - through the release broker (`hie-edge-e2e` built by `cargo bench`): RAD-69 for every instance
//!   over mutual TLS by curl (HTTP/1.1 and HTTP/2), by three brokers in turn, fetching by WADO-RS,
//!   by C-GET, and by C-MOVE to the broker's own DICOM listener (`RETRIEVE_BENCH_VIA=c-get,c-move`
//!   picks some; the default is all three).
//!
//! Printed: MB/s, instances/s, time to first byte (curl's `time_starttransfer`; for dcmtk, until
//! the first file lands in the output folder), the CPU seconds per GB of Orthanc, the clients and
//! the broker or stunnel (utime + stime of `/proc/<pid>/stat`), and the broker's peak memory per
//! concurrent retrieval (VmHWM, reset with `clear_refs` before each measure) for 4 concurrent
//! retrievals and for single retrievals of 100 and 2,000-instance studies. Asserts nothing about time; checks that every retrieval was whole.
//! `RETRIEVE_BENCH_RUNS` sets the runs per path (default 3); `RETRIEVE_BENCH_PROFILE_SECS=N` first
//! repeats the CT retrieval through each broker for N seconds, for a profiler attached to it.
//! Results go to docs/performance.md.
//! The brokers record registrations themselves and publish nothing (`[registry] kind` cleared).

#[path = "../support/registered.rs"]
mod registered;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hie_e2e::{BrokerOptions, BrokerProc, Engine, free_addr};
use hie_store::{Store, StoreOptions};
use hie_testkit::{GeneratedStudy, Modality, Orthanc, OrthancOptions, generate_study};
use hie_tls::pki::test_pki::{LeafSpec, TestCa};

const REPOSITORY: &str = "1.3.6.1.4.1.21367.13.80.110";
const RAD69_ACTION: &str = "urn:ihe:rad:2009:RetrieveImagingDocumentSet";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const CT_INSTANCES: usize = 500;
const CONCURRENT: usize = 4;
/// The broker's AE title (`[dicom] ae_title`): the C-MOVE destination Orthanc knows.
const BROKER_AE: &str = "HIE_EDGE";

fn main() {
    hie_e2e::init!();
    let runs: usize = std::env::var("RETRIEVE_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3).max(1);
    let vias = vias_wanted();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let work = tempfile::tempdir().unwrap();
    println!("bench: B-RAD69, {runs} run(s) per path, median kept; broker {}", hie_e2e::broker_exe().display());
    println!(
        "machine: {} CPUs, {}; {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel(),
        load()
    );

    // The PACS and its studies. Orthanc knows both C-MOVE destinations: dcmtk's storescp, and the
    // DICOM listener of the broker that retrieves by C-MOVE.
    let storescp_port = hie_testkit::free_port();
    let move_listener = free_addr();
    let orthanc = Orthanc::start_with(OrthancOptions {
        modalities: vec![Modality::local("STORESCP", storescp_port), Modality::local(BROKER_AE, move_listener.port())],
        ..OrthancOptions::default()
    });
    let ct_template = ct_template(work.path());
    let ct = generate_study(&ct_template, CT_INSTANCES, 100, &work.path().join("ct"));
    let pet_template = hie_testkit::fixtures::IDS_DEPT024_A.images()[0].clone();
    let pet_100 = generate_study(&pet_template, 100, 100, &work.path().join("pet100"));
    let pet_2000 = generate_study(&pet_template, 2_000, 500, &work.path().join("pet2000"));
    let loading = Instant::now();
    for study in [&ct, &pet_100, &pet_2000] {
        orthanc.upload_all(&study.paths());
    }
    let ct_bytes: u64 = ct.paths().iter().map(|path| std::fs::metadata(path).unwrap().len()).sum();
    println!(
        "dataset: CT {} instances, {:.1} MB ({:.2} MB each); PET 100 and 2,000 instances of {} KB; loaded into Orthanc in {:.1} s",
        ct.instances.len(),
        mb(ct_bytes),
        mb(ct_bytes) / ct.instances.len() as f64,
        std::fs::metadata(&pet_template).unwrap().len() / 1000,
        loading.elapsed().as_secs_f64()
    );
    let pki = Pki::new(work.path());
    let studies = Studies { ct: &ct, pet_100: &pet_100, pet_2000: &pet_2000 };
    let cpu = CpuMeter { orthanc: orthanc.pid(), middle: None };

    // Direct retrievals.
    let mut table: Vec<(String, Figures)> = Vec::new();
    let study_url = format!("{}/dicom-web/studies/{}", orthanc.http_url(), ct.study_instance_uid);
    let direct_wado = cpu.median(runs, "direct WADO-RS", || {
        direct_wado_rs(&study_url, &[], &work.path().join("direct-wado"), ct.instances.len())
    });
    table.push(("direct WADO-RS (curl)".to_owned(), direct_wado));
    // What TLS alone costs on these cores: the same WADO-RS through stunnel, a TLS terminator
    // that does nothing but copy, with the broker's certificates and the same mutual TLS.
    let stunnel = Stunnel::start(&pki, work.path(), orthanc.http_port());
    let tls_url = format!("https://localhost:{}/dicom-web/studies/{}", stunnel.port, ct.study_instance_uid);
    let floor = CpuMeter { middle: Some(stunnel.child.id()), ..cpu };
    let direct_tls = floor.median(runs, "direct WADO-RS over TLS (stunnel)", || {
        direct_wado_rs(&tls_url, &pki.curl_tls(), &work.path().join("direct-wado-tls"), ct.instances.len())
    });
    drop(stunnel);
    table.push(("direct WADO-RS over mTLS (curl, stunnel)".to_owned(), direct_tls));
    let direct_cget = cpu.median(runs, "direct C-GET", || dcmtk_get(&orthanc, &ct, work.path(), ct_bytes));
    table.push(("direct C-GET (getscu)".to_owned(), direct_cget));
    let direct_cmove =
        cpu.median(runs, "direct C-MOVE", || dcmtk_move(&orthanc, &ct, work.path(), storescp_port, ct_bytes));
    table.push(("direct C-MOVE (movescu to storescp)".to_owned(), direct_cmove));
    // Small instances cost per instance what big ones cost per byte: the same direct paths on the
    // 2,000 PET instances, beside which the brokers' 2,000-instance retrievals are printed.
    let pet_bytes: u64 = pet_2000.paths().iter().map(|path| std::fs::metadata(path).unwrap().len()).sum();
    let small_cget = median(runs, || dcmtk_get(&orthanc, &pet_2000, work.path(), pet_bytes));
    table.push(("direct C-GET (getscu), PET 2,000".to_owned(), small_cget));
    let small_cmove = median(runs, || dcmtk_move(&orthanc, &pet_2000, work.path(), storescp_port, pet_bytes));
    table.push(("direct C-MOVE (movescu), PET 2,000".to_owned(), small_cmove));

    // Through the broker: one broker per way in, in turn, each on its own store.
    let mut ratios = Vec::new();
    for via in vias {
        let direct = match via {
            Via::WadoRs => direct_wado,
            Via::CGet => direct_cget,
            Via::CMove => direct_cmove,
        };
        let options = via.broker_options(&orthanc, move_listener, &pki);
        let broker = BrokerProc::start_with(options);
        for study in [&ct, &pet_100, &pet_2000] {
            runtime.block_on(publish(&broker, &study.study_instance_uid));
        }
        println!();
        println!("{}: {}", via.label(), load());
        let meter = CpuMeter { middle: Some(broker.pid()), ..cpu };
        let figures = through_broker(&broker, via, &pki, &studies, work.path(), runs, &meter);
        for (http, figures) in ["http1.1", "http2"].iter().zip(&figures) {
            table.push((format!("hie-edge RAD-69 {http} via {}", via.label()), *figures));
            ratios.push((*http, via, figures.mb_per_s() / direct.mb_per_s(), (figures.ttfb - direct.ttfb) * 1000.0));
            if via == Via::WadoRs {
                println!(
                    "ratio throughput{{path=\"RAD-69 {http} via WADO-RS\",against=\"direct WADO-RS over mTLS (stunnel)\"}} {:.3} (no goal: what the broker adds to TLS)",
                    figures.mb_per_s() / direct_tls.mb_per_s()
                );
            }
        }
    }

    println!();
    println!("{:<44} {:>9} {:>12} {:>10} {:>9}", "path", "MB/s", "instances/s", "TTFB ms", "total s");
    for (path, figures) in &table {
        println!(
            "{path:<44} {:>9.1} {:>12.0} {:>10.1} {:>9.2}",
            figures.mb_per_s(),
            figures.instances_per_s(),
            figures.ttfb * 1000.0,
            figures.total
        );
    }
    println!();
    for (http, via, ratio, ttfb_delta) in ratios {
        let label = via.label();
        println!(
            "ratio throughput{{path=\"RAD-69 {http} via {label}\",against=\"direct {label}\"}} {ratio:.3} (goal >= {:.2})",
            via.goal()
        );
        // curl 7.88 sets time_starttransfer when an HTTP/2 request is sent, not at the first byte
        // of the answer: only the HTTP/1.1 figure is a time to first byte.
        if http == "http1.1" {
            println!(
                "figure ttfb_delta_ms{{path=\"RAD-69 {http} via {label}\",against=\"direct {label}\"}} {ttfb_delta:.1} (goal <= 10)"
            );
        }
    }
    println!("{}", load());
}

/// The studies every broker retrieves.
struct Studies<'a> {
    ct: &'a GeneratedStudy,
    pet_100: &'a GeneratedStudy,
    pet_2000: &'a GeneratedStudy,
}

/// How a broker fetches from Orthanc (`[pacs] kind` and `retrieve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    WadoRs,
    CGet,
    /// To the broker's own DICOM listener, which Orthanc has among its modalities.
    CMove,
}

impl Via {
    const ALL: [Via; 3] = [Via::WadoRs, Via::CGet, Via::CMove];

    fn label(self) -> &'static str {
        match self {
            Via::WadoRs => "WADO-RS",
            Via::CGet => "C-GET",
            Via::CMove => "C-MOVE",
        }
    }

    /// B.3 B-RAD69: the throughput against the direct retrieval of the same kind.
    fn goal(self) -> f64 {
        match self {
            Via::WadoRs | Via::CGet => 0.90,
            Via::CMove => 0.85,
        }
    }

    fn broker_options(self, orthanc: &Orthanc, move_listener: SocketAddr, pki: &Pki) -> BrokerOptions {
        let mut options = BrokerOptions::new(Engine::Sqlite)
            // The bench records registrations itself: nothing is published to a registry.
            .env("HIE_EDGE__AFFINITY_DOMAIN__PROFILE", "")
            .env("HIE_EDGE__REGISTRY__KIND", "")
            .env("HIE_EDGE__NODE__REPOSITORY_UNIQUE_ID", REPOSITORY)
            .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0")
            .env("HIE_EDGE__DICOM__QUIET_PERIOD_SECS", "0")
            .env("HIE_EDGE__TELEMETRY__LOG_LEVEL", "warn")
            .env("HIE_EDGE__HTTPS__CERTIFICATE", &pki.server_certificate.display().to_string())
            .env("HIE_EDGE__HTTPS__PRIVATE_KEY", &pki.server_key.display().to_string())
            .env("HIE_EDGE__HTTPS__CLIENT_CA", &pki.ca.display().to_string())
            .env("HIE_EDGE__PARTNERS__0__NAME", "bench")
            .env("HIE_EDGE__PARTNERS__0__CERTIFICATE", &pki.client_certificate.display().to_string())
            .env("HIE_EDGE__PARTNERS__0__TRANSACTIONS", "RAD-69");
        match self {
            Via::WadoRs => {
                options = options
                    .env("HIE_EDGE__PACS__KIND", "dicomweb")
                    .env("HIE_EDGE__PACS__URL", &format!("{}/dicom-web", orthanc.http_url()));
            }
            Via::CGet | Via::CMove => {
                let retrieve = if self == Via::CGet { "c-get" } else { "c-move" };
                options = options
                    .env("HIE_EDGE__DICOM__AE_TITLE", BROKER_AE)
                    .env("HIE_EDGE__PACS__KIND", "dimse")
                    .env("HIE_EDGE__PACS__AE_TITLE", orthanc.ae_title())
                    .env("HIE_EDGE__PACS__HOST", "127.0.0.1")
                    .env("HIE_EDGE__PACS__PORT", &orthanc.dicom_port().to_string())
                    .env("HIE_EDGE__PACS__RETRIEVE", retrieve);
                if self == Via::CMove {
                    options = options.env("HIE_EDGE__DICOM__LISTEN", &move_listener.to_string());
                }
            }
        }
        options
    }
}

/// `RETRIEVE_BENCH_VIA` (a comma-separated list of wado-rs, c-get, c-move), or all three.
fn vias_wanted() -> Vec<Via> {
    let Ok(list) = std::env::var("RETRIEVE_BENCH_VIA") else { return Via::ALL.to_vec() };
    list.split(',')
        .map(|name| {
            Via::ALL
                .into_iter()
                .find(|via| via.label().eq_ignore_ascii_case(name.trim()))
                .unwrap_or_else(|| panic!("RETRIEVE_BENCH_VIA: {name:?} is none of wado-rs, c-get, c-move"))
        })
        .collect()
}

/// RAD-69 of the CT study by HTTP/1.1 and HTTP/2 (its CPU per GB printed), then the memory
/// figures: concurrent retrievals, and one retrieval of 100 and of 2,000 instances.
fn through_broker(
    broker: &BrokerProc,
    via: Via,
    pki: &Pki,
    studies: &Studies,
    work: &Path,
    runs: usize,
    cpu: &CpuMeter,
) -> Vec<Figures> {
    let label = via.label();
    let https = broker.https_addr;
    let ct = studies.ct;
    let rad69_ct = pki.request_file(work, "ct", &rad69_body(ct));
    let pid = broker.pid();
    // For a profiler attached to the broker (`perf record -p`): the CT retrieval over and over.
    if let Some(secs) = std::env::var("RETRIEVE_BENCH_PROFILE_SECS").ok().and_then(|secs| secs.parse().ok()) {
        println!("profiling: broker pid {pid}, RAD-69 of the CT study by HTTP/1.1 for {secs} s");
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let figures = pki.rad69(https, &rad69_ct, &work.join("rad69"), &["--http1.1"], ct.instances.len());
            println!("  {:.1} MB/s", figures.mb_per_s());
        }
    }
    let mut broker_figures = Vec::new();
    for http in ["--http1.1", "--http2"] {
        let path = format!("RAD-69 {http} via {label}");
        let figures =
            cpu.median(runs, &path, || pki.rad69(https, &rad69_ct, &work.join("rad69"), &[http], ct.instances.len()));
        broker_figures.push(figures);
    }

    let base = reset_peak(pid);
    let threads: Vec<_> = (0..CONCURRENT)
        .map(|index| {
            let pki = pki.clone();
            let request = rad69_ct.clone();
            let output = work.join(format!("concurrent-{index}"));
            let n = ct.instances.len();
            std::thread::spawn(move || pki.rad69(https, &request, &output, &["--http2"], n))
        })
        .collect();
    let concurrent: Vec<Figures> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let peak = hie_e2e::vm_hwm_kib(pid).saturating_sub(base);
    let aggregate: f64 = concurrent.iter().map(|figures| figures.bytes as f64).sum::<f64>()
        / concurrent.iter().map(|figures| figures.total).fold(0.0, f64::max)
        / 1e6;
    println!(
        "figure broker_peak_kib_per_retrieval{{via=\"{label}\",concurrent=\"{CONCURRENT}\",study=\"CT {CT_INSTANCES}\"}} {} (goal <= 16384); aggregate {aggregate:.1} MB/s",
        peak / CONCURRENT as u64
    );
    let mut per_size = Vec::new();
    for study in [studies.pet_100, studies.pet_2000] {
        let request = pki.request_file(work, &format!("pet{}", study.instances.len()), &rad69_body(study));
        let base = reset_peak(pid);
        let figures = pki.rad69(https, &request, &work.join("pet"), &[], study.instances.len());
        let peak = hie_e2e::vm_hwm_kib(pid).saturating_sub(base);
        println!(
            "figure broker_peak_kib{{via=\"{label}\",instances=\"{}\"}} {peak} ({:.1} MB at {:.1} MB/s, {:.0} instances/s, TTFB {:.1} ms)",
            study.instances.len(),
            mb(figures.bytes),
            figures.mb_per_s(),
            figures.instances_per_s(),
            figures.ttfb * 1000.0
        );
        per_size.push(peak);
    }
    println!(
        "figure broker_peak_kib_difference{{via=\"{label}\",2000_minus_100}} {} (goal: unchanged; VmHWM moves in allocator-sized steps)",
        per_size[1] as i64 - per_size[0] as i64
    );
    println!("broker idle RSS {} KiB", rss_kib(pid));
    broker_figures
}

/// The load average, since other work on the machine moves every figure.
fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load average {}", fields.join(" "))
}

/// What one retrieval took.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    ttfb: f64,
    total: f64,
    bytes: u64,
    instances: usize,
}

impl Figures {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.total.max(1e-9)
    }

    fn instances_per_s(&self) -> f64 {
        self.instances as f64 / self.total.max(1e-9)
    }
}

/// Runs `measure` `runs` times; the run of median total time.
fn median(runs: usize, mut measure: impl FnMut() -> Figures) -> Figures {
    let mut all: Vec<Figures> = (0..runs).map(|_| measure()).collect();
    all.sort_by(|a, b| a.total.total_cmp(&b.total));
    all[all.len() / 2]
}

fn curl_figures(command: &mut Command, instances: usize) -> Figures {
    let output = command.output().expect("curl must be installed");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"200"), "{text}");
    Figures {
        ttfb: fields[1].parse().unwrap_or(0.0),
        total: fields[2].parse().unwrap_or(0.0),
        bytes: fields[3].parse().unwrap_or(0),
        instances,
    }
}

/// Parts of a multipart body: each part has a Content-Type header line.
fn count_parts(path: &Path) -> usize {
    let body = std::fs::read(path).unwrap();
    let n = memchr::memmem::find_iter(&body, b"\r\nContent-Type: application/dicom").count();
    std::fs::remove_file(path).unwrap();
    n
}

/// C-GET of the study with getscu into a fresh folder; TTFB is until the first file appears.
fn dcmtk_get(orthanc: &Orthanc, study: &GeneratedStudy, work: &Path, bytes: u64) -> Figures {
    let output = fresh_dir(&work.join("getscu"));
    let port = orthanc.dicom_port().to_string();
    let key = format!("StudyInstanceUID={}", study.study_instance_uid);
    let out = output.display().to_string();
    let args = [
        "-S",
        "-aet",
        "BENCH",
        "-aec",
        orthanc.ae_title(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &key,
        "-od",
        &out,
        "127.0.0.1",
        &port,
    ];
    let figures = timed_dcmtk("getscu", &args, &output, bytes, study.instances.len());
    assert_eq!(std::fs::read_dir(&output).unwrap().count(), study.instances.len(), "getscu whole");
    figures
}

/// C-MOVE of the study with movescu to a storescp on `port`.
fn dcmtk_move(orthanc: &Orthanc, study: &GeneratedStudy, work: &Path, port: u16, bytes: u64) -> Figures {
    let output = fresh_dir(&work.join("storescp"));
    let mut storescp = Command::new("storescp")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "STORESCP", "-od"])
        .arg(&output)
        .arg(port.to_string())
        .spawn()
        .expect("dcmtk's storescp must be installed");
    // storescp is up when its port accepts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let orthanc_port = orthanc.dicom_port().to_string();
    let key = format!("StudyInstanceUID={}", study.study_instance_uid);
    let args = [
        "-S",
        "-aet",
        "BENCH",
        "-aec",
        orthanc.ae_title(),
        "-aem",
        "STORESCP",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &key,
        "127.0.0.1",
        &orthanc_port,
    ];
    let figures = timed_dcmtk("movescu", &args, &output, bytes, study.instances.len());
    let _ = storescp.kill();
    let _ = storescp.wait();
    assert_eq!(std::fs::read_dir(&output).unwrap().count(), study.instances.len(), "movescu whole");
    figures
}

fn timed_dcmtk(tool: &str, args: &[&str], watched: &Path, bytes: u64, instances: usize) -> Figures {
    let started = Instant::now();
    let mut child = Command::new(tool)
        .env("TCP_NODELAY", "1")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{tool}: {error} (apt-get install dcmtk)"));
    let mut ttfb = None;
    loop {
        if ttfb.is_none() && std::fs::read_dir(watched).map(|mut entries| entries.next().is_some()).unwrap_or(false) {
            ttfb = Some(started.elapsed().as_secs_f64());
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            assert!(status.success(), "{tool}: {stderr}");
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let total = started.elapsed().as_secs_f64();
    Figures { ttfb: ttfb.unwrap_or(total), total, bytes, instances }
}

fn fresh_dir(path: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).unwrap();
    path.to_path_buf()
}

/// The test PKI of the bench: the broker's server certificate and the partner's.
#[derive(Clone)]
struct Pki {
    ca: PathBuf,
    server_certificate: PathBuf,
    server_key: PathBuf,
    client_certificate: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let authority = TestCa::new("Bench CA");
        let ca = authority.write_certificate(dir, "ca");
        let (server_certificate, server_key) = authority.issue(&LeafSpec::server()).write(dir, "server");
        let (client_certificate, client_key) = authority.issue(&LeafSpec::client("Bench Partner")).write(dir, "client");
        Pki { ca, server_certificate, server_key, client_certificate, client_key }
    }

    /// curl's options for mutual TLS as the partner.
    fn curl_tls(&self) -> Vec<String> {
        let path = |path: &PathBuf| path.display().to_string();
        vec![
            "--cacert".to_owned(),
            path(&self.ca),
            "--cert".to_owned(),
            path(&self.client_certificate),
            "--key".to_owned(),
            path(&self.client_key),
        ]
    }

    fn request_file(&self, dir: &Path, name: &str, body_xml: &str) -> PathBuf {
        let path = dir.join(format!("{name}.request.xml"));
        std::fs::write(&path, envelope(body_xml)).unwrap();
        path
    }

    /// One RAD-69 by curl over mutual TLS; checks that every instance came.
    fn rad69(&self, https: SocketAddr, request: &Path, output: &Path, extra: &[&str], instances: usize) -> Figures {
        let figures = curl_figures(
            Command::new("curl")
                // No `Expect: 100-continue` round trip before the request body.
                .args(["--silent", "--show-error", "-H", "Expect:"])
                .args(self.curl_tls())
                .args(extra)
                .args([
                    "-H",
                    &format!("Content-Type: application/soap+xml; charset=UTF-8; action=\"{RAD69_ACTION}\""),
                    "--data-binary",
                ])
                .arg(format!("@{}", request.display()))
                .arg("--output")
                .arg(output)
                .args(["--write-out", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"])
                .arg(format!("https://localhost:{}/xdsi/imaging-source", https.port())),
            instances,
        );
        assert_eq!(count_parts(output), instances, "RAD-69 whole");
        figures
    }
}

fn envelope(body_xml: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><env:Header><wsa:Action env:mustUnderstand="1">{RAD69_ACTION}</wsa:Action><wsa:MessageID>urn:uuid:{}</wsa:MessageID></env:Header><env:Body>{body_xml}</env:Body></env:Envelope>"#,
        uuid::Uuid::new_v4()
    )
}

fn rad69_body(study: &GeneratedStudy) -> String {
    let mut xml = format!(
        r#"<xdsiB:RetrieveImagingDocumentSetRequest xmlns:xdsiB="urn:ihe:rad:xdsi-b:2009" xmlns:xdsb="urn:ihe:iti:xds-b:2007"><xdsiB:StudyRequest studyInstanceUID="{}">"#,
        study.study_instance_uid
    );
    for series in &study.series_instance_uids {
        xml.push_str(&format!(r#"<xdsiB:SeriesRequest seriesInstanceUID="{series}">"#));
        for instance in study.instances.iter().filter(|instance| &instance.series_instance_uid == series) {
            xml.push_str(&format!(
                "<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{REPOSITORY}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>",
                instance.sop_instance_uid
            ));
        }
        xml.push_str("</xdsiB:SeriesRequest>");
    }
    xml.push_str(&format!("</xdsiB:StudyRequest><xdsiB:TransferSyntaxUIDList><xdsiB:TransferSyntaxUID>{EXPLICIT_LE}</xdsiB:TransferSyntaxUID></xdsiB:TransferSyntaxUIDList></xdsiB:RetrieveImagingDocumentSetRequest>"));
    xml
}

/// Has the broker build the study's manifest from the PACS, then records it as registered.
async fn publish(broker: &BrokerProc, study: &str) {
    let (status, body) = http_post(broker.api_addr, &format!("/api/studies/{study}/refresh"));
    assert_eq!(status, 202, "{body}");
    let store = Store::connect(&StoreOptions {
        url: broker.store_url.clone(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    registered::record_registered(&store, study, deadline, || broker.stderr_tail(20)).await;
    store.close().await;
}

fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    (raw.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0), raw)
}

/// A CT-sized template (512 x 512, 16 bits: about 0.5 MB) written by pydicom from the test venv.
fn ct_template(dir: &Path) -> PathBuf {
    let path = dir.join("ct-template.dcm");
    let script = r#"
import sys, os
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
ds.SOPClassUID = meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid()
ds.PatientName = "Bench^CT"; ds.PatientID = "BENCH-CT"; ds.PatientBirthDate = ""; ds.PatientSex = "O"
ds.StudyDate = "20250101"; ds.StudyTime = "120000"; ds.Modality = "CT"; ds.StudyID = "1"; ds.SeriesNumber = 1
ds.AccessionNumber = "BENCH1"; ds.ReferringPhysicianName = ""; ds.InstanceNumber = 1
ds.Rows = 512; ds.Columns = 512; ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11
ds.PixelRepresentation = 0; ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"
ds.PixelData = os.urandom(512 * 512 * 2)
ds.save_as(sys.argv[1], enforce_file_format=True)
"#;
    let python = std::env::var_os("HIE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| hie_e2e::workspace_root().join(".venv"))
        .join("bin/python");
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap_or_else(|error| panic!("{}: {error}; set HIE_TEST_VENV to a venv with pydicom", python.display()));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    path
}

fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
    rss_kib(pid)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Read once: a `getconf` run later would count among the clients' CPU time.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf").arg("CLK_TCK").output().ok();
        output
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may hold
/// spaces), as seconds: `index` 11 utime, 12 stime, 13 cutime, 14 cstime.
fn stat_seconds(pid: &str, indexes: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        indexes.iter().map(|index| fields.get(*index).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0)).sum();
    ticks / clock_ticks()
}

/// The CPU time of every process in a retrieval: Orthanc, the clients this bench ran and waited
/// for (curl, getscu, movescu and storescp: the children's times of `/proc/self/stat`), and
/// the process in the middle (a broker, stunnel), if any. On two shared cores the sum bounds the
/// throughput: at best 2 / (core-seconds per GB) GB/s.
#[derive(Debug, Clone, Copy)]
struct CpuMeter {
    orthanc: u32,
    middle: Option<u32>,
}

impl CpuMeter {
    fn now(&self) -> [f64; 3] {
        [
            stat_seconds(&self.orthanc.to_string(), &[11, 12]),
            stat_seconds("self", &[13, 14]),
            self.middle.map_or(0.0, |pid| stat_seconds(&pid.to_string(), &[11, 12])),
        ]
    }

    /// [`median`], printing the core-seconds per GB of each process over all the runs. The
    /// broker's figure keeps its name of earlier runs (`broker_cpu_seconds_per_gb`).
    fn median(&self, runs: usize, path: &str, mut measure: impl FnMut() -> Figures) -> Figures {
        let before = self.now();
        let mut bytes = 0;
        let figures = median(runs, || {
            let figures = measure();
            bytes += figures.bytes;
            figures
        });
        let after = self.now();
        let gb = bytes as f64 / 1e9;
        let [orthanc, clients, middle] = [0, 1, 2].map(|index| (after[index] - before[index]) / gb);
        if path.starts_with("RAD-69") {
            println!("figure broker_cpu_seconds_per_gb{{path=\"{path}\"}} {middle:.3}");
        }
        println!(
            "figure cpu_seconds_per_gb{{path=\"{path}\"}} orthanc {orthanc:.2}, clients {clients:.2}, middle {middle:.2}, all {:.2}",
            orthanc + clients + middle
        );
        figures
    }
}

/// WADO-RS of a whole study by curl (`extra`: TLS options); checks that every instance came.
fn direct_wado_rs(url: &str, extra: &[String], output: &Path, instances: usize) -> Figures {
    let figures = curl_figures(
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "-H",
                "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1",
            ])
            .args(extra)
            .args(["--output"])
            .arg(output)
            .args(["--write-out", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"])
            .arg(url),
        instances,
    );
    assert_eq!(count_parts(output), instances, "direct WADO-RS whole");
    figures
}

/// stunnel (Debian `stunnel4`) in front of Orthanc's HTTP port: TLS 1.3 with the broker's server
/// certificate, the partner's client certificate required, nothing else.
struct Stunnel {
    child: std::process::Child,
    port: u16,
}

impl Stunnel {
    fn start(pki: &Pki, dir: &Path, orthanc_http: u16) -> Stunnel {
        let port = hie_testkit::free_port();
        let config = dir.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\n[wado]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{orthanc_http}\n\
                 cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n\
                 sslVersionMin = TLSv1.3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
                pki.server_certificate.display(),
                pki.server_key.display(),
                pki.ca.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stunnel must be installed (apt-get install stunnel4)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Stunnel { child, port }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| format!("Linux {}", text.trim()))
        .unwrap_or_default()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
