//! A real Orthanc (Debian 12 `orthanc` 1.10 with the `orthanc-dicomweb` plugin) for tests: its
//! own temporary directory and free HTTP and DICOM ports, configured as real-peers.md section 1
//! (DICOMweb under `/dicom-web/` with `DicomWeb.Host` carrying the port, every DICOM service
//! allowed, `RemoteAccessAllowed: false`), plus the `DicomModalities` the test names so that
//! C-MOVE to our own SCP works.
//!
//! Orthanc has no bind-address option: its DICOM and HTTP ports listen on 0.0.0.0. That is
//! acceptable for tests on a CI machine (HTTP refuses non-loopback clients); for strict isolation
//! run the test binary in a network namespace (`unshare -n`).
//!
//! Orthanc runs with `TCP_NODELAY=1` in its environment (its DICOM sockets are dcmtk's; see the
//! Nagle note in real-peers.md).
//!
//! [`Orthanc::data_sets_by_getscu`] and [`Orthanc::data_sets_by_movescu`] give what dcmtk's SCUs
//! receive from it: the byte references for C-GET and C-MOVE retrievals.
//!
//! [`Orthanc::start`] returns once HTTP `/system` answers and a C-ECHO succeeds. Dropping it
//! kills the process and WAITS for it: a new Orthanc started before the old PID is gone would
//! fail to bind (real-peers.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::part10::{self, Part10};
use crate::{dcmtk, free_port, http};

/// A DICOM peer Orthanc may send to (C-MOVE destination, or C-STORE via REST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modality {
    /// Orthanc's name for it (used in REST URLs).
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl Modality {
    /// A modality on 127.0.0.1, named after its AE title in lower case.
    pub fn local(ae_title: &str, port: u16) -> Modality {
        Modality {
            name: ae_title.to_ascii_lowercase(),
            ae_title: ae_title.to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
        }
    }
}

/// How to start Orthanc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrthancOptions {
    pub ae_title: String,
    pub modalities: Vec<Modality>,
    /// `--verbose`: the log then shows each association ("Association Received from AET ...",
    /// "Association Release with AET ...", aborts), for tests that check how ours end.
    pub verbose: bool,
}

impl Default for OrthancOptions {
    fn default() -> OrthancOptions {
        OrthancOptions { ae_title: "ORTHANC".to_owned(), modalities: Vec::new(), verbose: false }
    }
}

/// A running Orthanc.
#[derive(Debug)]
pub struct Orthanc {
    child: Child,
    dir: tempfile::TempDir,
    http_port: u16,
    dicom_port: u16,
    ae_title: String,
}

impl Orthanc {
    /// Starts an Orthanc with no modalities.
    pub fn start() -> Orthanc {
        Orthanc::start_with(OrthancOptions::default())
    }

    /// Starts an Orthanc with `options`; retries on fresh ports when a port was taken between
    /// choosing and binding it.
    pub fn start_with(options: OrthancOptions) -> Orthanc {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Orthanc::try_start(&options) {
                Ok(orthanc) => return orthanc,
                Err(log) => last_log = log,
            }
        }
        panic!("Orthanc did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    fn try_start(options: &OrthancOptions) -> Result<Orthanc, String> {
        let dir = tempfile::Builder::new()
            .prefix("hie-testkit-orthanc-")
            .tempdir()
            .unwrap_or_else(|error| panic!("temporary directory: {error}"));
        let http_port = free_port();
        let dicom_port = free_port();
        let config = config_json(options, http_port, dicom_port);
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, config).unwrap_or_else(|error| panic!("writing orthanc.json: {error}"));
        let log = std::fs::File::create(dir.path().join("orthanc.log"))
            .unwrap_or_else(|error| panic!("creating orthanc.log: {error}"));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("orthanc.log: {error}"));
        let mut command = Command::new(ORTHANC_BINARY);
        if options.verbose {
            command.arg("--verbose");
        }
        let child = command
            .arg("orthanc.json")
            .current_dir(dir.path())
            // Orthanc's DICOM sockets are dcmtk's, which set TCP_NODELAY only when this variable
            // is set; without it every small PDU Orthanc sends stalls about 40 ms (measured: a
            // C-GET of 1,000 instances took 45 s instead of a few).
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{ORTHANC_BINARY} is not runnable ({error}): install Debian's orthanc and orthanc-dicomweb")
            });
        let mut orthanc = Orthanc { child, dir, http_port, dicom_port, ae_title: options.ae_title.clone() };
        let started = Instant::now();
        let mut http_ready = false;
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = orthanc.child.try_wait() {
                // Most likely a port clash; the caller retries on new ports.
                return Err(orthanc.log());
            }
            if !http_ready {
                http_ready = matches!(http::get(orthanc.http_addr(), "/system", PROBE_TIMEOUT), Ok(response) if response.status == 200);
            }
            if http_ready {
                let port = dicom_port.to_string();
                let echo =
                    dcmtk::dcmtk("echoscu", &["-aet", "HIETESTKIT", "-aec", &options.ae_title, "127.0.0.1", &port]);
                if echo.success() {
                    return Ok(orthanc);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = orthanc.log();
        drop(orthanc);
        panic!("Orthanc did not answer within {START_TIMEOUT:?}; log:\n{log}");
    }

    pub fn dicom_port(&self) -> u16 {
        self.dicom_port
    }

    /// The DICOM address on loopback.
    pub fn dicom_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dicom_port))
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The Orthanc process, for benches that read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }

    /// Uploads one file through `POST /instances`; returns Orthanc's JSON answer.
    pub fn upload(&self, path: &Path) -> Result<String, String> {
        let body = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let response = http::post(self.http_addr(), "/instances", &body, REST_TIMEOUT)
            .map_err(|error| format!("POST /instances {}: {error}", path.display()))?;
        if response.status != 200 {
            return Err(format!("POST /instances {}: HTTP {}: {}", path.display(), response.status, response.text()));
        }
        Ok(response.text())
    }

    /// Uploads every file; panics on the first failure.
    pub fn upload_all(&self, paths: &[PathBuf]) {
        for path in paths {
            if let Err(error) = self.upload(path) {
                panic!("{error}");
            }
        }
    }

    /// DELETE on the REST API (`/instances/{id}`, `/studies/{id}`): the status.
    pub fn delete(&self, path: &str) -> u16 {
        match http::delete(self.http_addr(), path, REST_TIMEOUT) {
            Ok(response) => response.status,
            Err(error) => panic!("DELETE {path}: {error}"),
        }
    }

    /// Orthanc's identifier of the resource with this DICOM UID (`POST /tools/lookup`), if it
    /// holds one.
    pub fn lookup(&self, uid: &str) -> Option<String> {
        let response = http::post(self.http_addr(), "/tools/lookup", uid.as_bytes(), REST_TIMEOUT)
            .unwrap_or_else(|error| panic!("POST /tools/lookup: {error}"));
        assert_eq!(response.status, 200, "POST /tools/lookup {uid}: {}", response.text());
        // [ { "ID" : "...", "Path" : "...", "Type" : "Instance" } ]: the first "ID" value.
        let text = response.text();
        let after = text.split("\"ID\"").nth(1)?;
        let value = after.split('"').nth(1)?;
        Some(value.to_owned())
    }

    /// GET on the REST API: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        match http::get(self.http_addr(), path, REST_TIMEOUT) {
            Ok(response) => (response.status, response.text()),
            Err(error) => panic!("GET {path}: {error}"),
        }
    }

    /// Deletes a study (every series and instance of it) by its Study Instance UID:
    /// [`Orthanc::lookup`], then `DELETE /studies/{id}`.
    pub fn delete_study(&self, study_instance_uid: &str) -> Result<(), String> {
        let id =
            self.lookup(study_instance_uid).ok_or_else(|| format!("study {study_instance_uid} is not in Orthanc"))?;
        match self.delete(&format!("/studies/{id}")) {
            200 => Ok(()),
            status => Err(format!("DELETE /studies/{id}: HTTP {status}")),
        }
    }

    /// The data sets dcmtk's `getscu +B` receives for a study (C-GET, Study level, calling
    /// `our_ae`), by SOP Instance UID: the byte reference for what a C-GET SCU must get. dcmtk
    /// 3.6.7's getscu proposes only Explicit VR Little Endian for storage, so Orthanc transcodes
    /// instances it stores otherwise. Files go to `dir`.
    pub fn data_sets_by_getscu(&self, study: &str, our_ae: &str, dir: &Path) -> BTreeMap<String, Part10> {
        std::fs::create_dir_all(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let port = self.dicom_port.to_string();
        let query = format!("StudyInstanceUID={study}");
        let out = dir.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", dir.display()));
        let args = ["-S", "+B", "-aet", our_ae, "-aec", &self.ae_title, "-od", out, "-k", "QueryRetrieveLevel=STUDY"];
        let mut args = args.to_vec();
        args.extend(["-k", &query, "127.0.0.1", &port]);
        let output = dcmtk::dcmtk("getscu", &args);
        assert!(output.success(), "getscu: {}", output.combined());
        read_folder(dir)
    }

    /// The data sets dcmtk's `storescp +B` receives when this Orthanc C-MOVEs a study to it
    /// (`movescu`, Study level): the byte reference for a C-MOVE destination, as Orthanc
    /// re-encodes what it sends that way (padding normalised), so the uploaded file is not one.
    /// Orthanc must have `storescp` among its modalities (AE title and port). Files go to `dir`.
    pub fn data_sets_by_movescu(&self, study: &str, storescp: &Modality, dir: &Path) -> BTreeMap<String, Part10> {
        std::fs::create_dir_all(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let out = dir.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", dir.display()));
        let mut child = Command::new("storescp")
            .args(["-aet", &storescp.ae_title, "+B", "-od", out, &storescp.port.to_string()])
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("storescp is not runnable ({error}): install Debian's dcmtk"));
        let port = self.dicom_port.to_string();
        let query = format!("StudyInstanceUID={study}");
        let args = [
            "-S",
            "-aet",
            "HIETESTKIT",
            "-aec",
            &self.ae_title,
            "-aem",
            &storescp.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &query,
            "127.0.0.1",
            &port,
        ];
        // storescp needs a moment to listen; movescu fails fast until it does.
        let mut last = None;
        for _ in 0..STORESCP_ATTEMPTS {
            let output = dcmtk::dcmtk("movescu", &args);
            if output.success() {
                last = None;
                break;
            }
            last = Some(output.combined());
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Some(log) = last {
            panic!("movescu to storescp never succeeded: {log}");
        }
        read_folder(dir)
    }

    /// Orthanc's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every Part 10 file of `dir`, by SOP Instance UID.
fn read_folder(dir: &Path) -> BTreeMap<String, Part10> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let mut sets = BTreeMap::new();
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("{}: {error}", dir.display())).path();
        let part = part10::read(&path);
        sets.insert(part.sop_instance_uid.clone(), part);
    }
    sets
}

fn config_json(options: &OrthancOptions, http_port: u16, dicom_port: u16) -> String {
    let modalities: Vec<String> = options
        .modalities
        .iter()
        .map(|modality| {
            format!(
                r#""{}" : {{ "AET" : "{}", "Host" : "{}", "Port" : {}, "AllowEcho" : true, "AllowFind" : true, "AllowMove" : true, "AllowGet" : true, "AllowStore" : true }}"#,
                modality.name, modality.ae_title, modality.host, modality.port
            )
        })
        .collect();
    format!(
        r#"{{
  "Name" : "HIE-TESTKIT-PACS",
  "StorageDirectory" : "db", "IndexDirectory" : "db",
  "Plugins" : [ "{plugin}" ],
  "HttpServerEnabled" : true, "HttpPort" : {http_port},
  "RemoteAccessAllowed" : false, "AuthenticationEnabled" : false,
  "DicomServerEnabled" : true, "DicomAet" : "{ae_title}", "DicomPort" : {dicom_port},
  "DicomCheckCalledAet" : false,
  "DicomAlwaysAllowEcho" : true, "DicomAlwaysAllowStore" : true,
  "DicomAlwaysAllowFind" : true, "DicomAlwaysAllowGet" : true, "DicomAlwaysAllowMove" : true,
  "DicomModalities" : {{ {modalities} }},
  "DicomWeb" : {{ "Enable" : true, "Root" : "/dicom-web/", "EnableWado" : true,
                 "WadoRoot" : "/wado", "Host" : "127.0.0.1:{http_port}", "Ssl" : false }},
  "StableAge" : 2, "ConcurrentJobs" : 2
}}
"#,
        plugin = DICOMWEB_PLUGIN,
        ae_title = options.ae_title,
        modalities = modalities.join(", "),
    )
}

const ORTHANC_BINARY: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const START_ATTEMPTS: usize = 5;
/// movescu attempts while storescp starts listening (100 ms apart).
const STORESCP_ATTEMPTS: usize = 50;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const REST_TIMEOUT: Duration = Duration::from_secs(60);
