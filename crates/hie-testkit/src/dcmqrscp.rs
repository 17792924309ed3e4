//! dcmtk's `dcmqrscp` as a second, tiny PACS (real-peers.md section 2): default fork mode (the
//! single-process mode exits after one association), its own database directory, a HostTable
//! naming the peers it may C-MOVE to. Loaded with `storescu`; C-FIND/C-GET/C-MOVE work in the
//! Study Root model (the Patient Root model needs a PatientID at every level).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{dcmtk, free_port};

/// A HostTable entry: a peer dcmqrscp may send C-MOVE sub-operations to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl HostEntry {
    /// An entry on 127.0.0.1, named after its AE title in lower case.
    pub fn local(ae_title: &str, port: u16) -> HostEntry {
        HostEntry {
            name: ae_title.to_ascii_lowercase(),
            ae_title: ae_title.to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
        }
    }
}

/// How to start dcmqrscp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcmqrscpOptions {
    pub ae_title: String,
    /// `MaxPDUSize` (what dcmqrscp receives).
    pub max_pdu: u32,
    pub hosts: Vec<HostEntry>,
}

impl Default for DcmqrscpOptions {
    fn default() -> DcmqrscpOptions {
        DcmqrscpOptions { ae_title: "PACS".to_owned(), max_pdu: 16_384, hosts: Vec::new() }
    }
}

/// A running dcmqrscp.
#[derive(Debug)]
pub struct Dcmqrscp {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    ae_title: String,
}

impl Dcmqrscp {
    pub fn start() -> Dcmqrscp {
        Dcmqrscp::start_with(DcmqrscpOptions::default())
    }

    /// Starts dcmqrscp; retries on fresh ports when the chosen one was taken meanwhile.
    pub fn start_with(options: DcmqrscpOptions) -> Dcmqrscp {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Dcmqrscp::try_start(&options) {
                Ok(peer) => return peer,
                Err(log) => last_log = log,
            }
        }
        panic!("dcmqrscp did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    fn try_start(options: &DcmqrscpOptions) -> Result<Dcmqrscp, String> {
        let dir = tempfile::Builder::new()
            .prefix("hie-testkit-dcmqrscp-")
            .tempdir()
            .unwrap_or_else(|error| panic!("temporary directory: {error}"));
        let storage = dir.path().join("db").join(&options.ae_title);
        std::fs::create_dir_all(&storage).unwrap_or_else(|error| panic!("{}: {error}", storage.display()));
        let port = free_port();
        let hosts: String = options
            .hosts
            .iter()
            .map(|host| format!("{} = ({}, {}, {})\n", host.name, host.ae_title, host.host, host.port))
            .collect();
        let config = format!(
            "NetworkTCPPort  = {port}\nMaxPDUSize      = {max_pdu}\nMaxAssociations = 16\n\
             HostTable BEGIN\n{hosts}HostTable END\nVendorTable BEGIN\nVendorTable END\n\
             AETable BEGIN\n{ae}  {storage}  RW  (200, 1024mb)  ANY\nAETable END\n",
            max_pdu = options.max_pdu,
            ae = options.ae_title,
            storage = storage.display(),
        );
        let config_path = dir.path().join("dcmqrscp.cfg");
        std::fs::write(&config_path, config).unwrap_or_else(|error| panic!("writing dcmqrscp.cfg: {error}"));
        let log = std::fs::File::create(dir.path().join("dcmqrscp.log"))
            .unwrap_or_else(|error| panic!("creating dcmqrscp.log: {error}"));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("dcmqrscp.log: {error}"));
        let child = Command::new("dcmqrscp")
            .args(["-c", "dcmqrscp.cfg"])
            .current_dir(dir.path())
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("dcmqrscp is not runnable ({error}): install Debian's dcmtk"));
        let mut peer = Dcmqrscp { child, dir, port, ae_title: options.ae_title.clone() };
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = peer.child.try_wait() {
                return Err(peer.log());
            }
            let port = port.to_string();
            if dcmtk::dcmtk("echoscu", &["-aet", "HIETESTKIT", "-aec", &options.ae_title, "127.0.0.1", &port]).success()
            {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = peer.log();
        drop(peer);
        panic!("dcmqrscp did not answer within {START_TIMEOUT:?}; log:\n{log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }

    /// Stores `files` with `storescu`; panics with its output if it fails.
    pub fn load(&self, files: &[PathBuf]) {
        let port = self.port.to_string();
        let mut args: Vec<&str> = vec!["-aet", "HIETESTKIT", "-aec", &self.ae_title, "127.0.0.1", &port];
        let paths: Vec<String> = files.iter().map(|path| path.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let output = dcmtk::dcmtk("storescu", &args);
        assert!(output.success(), "storescu into dcmqrscp failed:\n{}", output.combined());
    }

    /// dcmqrscp's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dcmqrscp.log")).unwrap_or_default()
    }

    /// The directory the stored files go to.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("db").join(&self.ae_title)
    }
}

impl Drop for Dcmqrscp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(30);
