//! Shared pieces of the hie-dicom-net wire tests: sinks that write what they receive to files,
//! identifiers, the contexts each operation proposes, and our SCP started on a free port.

#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hie_dicom_net::client::UNCOMPRESSED;
use hie_dicom_net::{
    AssociationInfo, ClientOptions, InstanceInfo, MoveRouter, NetError, ProposedContext, ScpHandler, ServerPolicy,
    StoreSink,
};
use hie_dimse::command::CStoreRq;
use hie_dimse::{Status, uids};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Our AE title as SCU, and as the SCP that C-MOVEs go to.
pub const OUR_AE: &str = "HIE_EDGE";

/// What a sink saw of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub info: InstanceInfo,
    pub path: PathBuf,
    pub fragments: usize,
    pub bytes: usize,
    /// The largest fragment seen.
    pub max_fragment: usize,
    /// `end` (true) or `abort` (false) closed it; `None` while open.
    pub completed: Option<bool>,
}

/// Writes each instance's data set, fragment by fragment as it arrives, to
/// `<dir>/<SOP Instance UID>`; refuses the instances listed in `refuse` at `begin`.
pub struct FileSink {
    pub dir: PathBuf,
    pub refuse: Vec<String>,
    pub received: Arc<Mutex<Vec<Received>>>,
    file: Option<tokio::fs::File>,
}

impl FileSink {
    pub fn new(dir: &Path) -> FileSink {
        std::fs::create_dir_all(dir).unwrap();
        FileSink { dir: dir.to_owned(), refuse: Vec::new(), received: Arc::default(), file: None }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn completed(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.completed == Some(true)).collect()
    }
}

impl StoreSink for FileSink {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        if self.refuse.contains(&instance.sop_instance_uid) {
            return Err(Status::OUT_OF_RESOURCES);
        }
        let path = self.dir.join(&instance.sop_instance_uid);
        self.file = Some(tokio::fs::File::create(&path).await.map_err(|_| Status::OUT_OF_RESOURCES)?);
        self.received.lock().unwrap().push(Received {
            info: instance.clone(),
            path,
            fragments: 0,
            bytes: 0,
            max_fragment: 0,
            completed: None,
        });
        Ok(())
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        let file = self.file.as_mut().ok_or(Status::UNABLE_TO_PROCESS)?;
        file.write_all(&fragment).await.map_err(|_| Status::OUT_OF_RESOURCES)?;
        let mut received = self.received.lock().unwrap();
        let last = received.last_mut().unwrap();
        last.fragments += 1;
        last.bytes += fragment.len();
        last.max_fragment = last.max_fragment.max(fragment.len());
        Ok(())
    }

    async fn end(&mut self) -> Status {
        let Some(mut file) = self.file.take() else { return Status::UNABLE_TO_PROCESS };
        if file.flush().await.is_err() {
            return Status::OUT_OF_RESOURCES;
        }
        self.received.lock().unwrap().last_mut().unwrap().completed = Some(true);
        Status::SUCCESS
    }

    async fn abort(&mut self, _reason: &NetError) {
        self.file = None;
        if let Some(last) = self.received.lock().unwrap().last_mut() {
            last.completed = Some(false);
        }
    }
}

/// An SCP handler whose per-instance sinks write files into one directory and record into one
/// shared list.
#[derive(Clone)]
pub struct FileHandler {
    pub dir: PathBuf,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub refuse: Vec<String>,
    pub router: Option<MoveRouter>,
}

impl FileHandler {
    pub fn new(dir: &Path) -> FileHandler {
        std::fs::create_dir_all(dir).unwrap();
        FileHandler { dir: dir.to_owned(), received: Arc::default(), refuse: Vec::new(), router: None }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl ScpHandler for FileHandler {
    type Sink = FileSink;

    async fn store_sink(
        &self,
        _association: &AssociationInfo,
        _request: &CStoreRq,
        _transfer_syntax_uid: &str,
    ) -> Result<FileSink, Status> {
        Ok(FileSink { dir: self.dir.clone(), refuse: self.refuse.clone(), received: self.received.clone(), file: None })
    }

    fn move_router(&self) -> Option<&MoveRouter> {
        self.router.as_ref()
    }
}

/// Our SCP, serving on a free loopback port until the returned sender says stop.
pub struct RunningScp {
    pub addr: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

impl RunningScp {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn shut_down(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

pub async fn start_scp<H: ScpHandler>(policy: ServerPolicy, handler: H) -> RunningScp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(hie_dicom_net::serve(listener, Arc::new(policy), handler, shutdown));
    RunningScp { addr, stop, task }
}

/// An identifier: Query/Retrieve Level and the given keys (an empty string is a return key).
pub fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    object.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(level)));
    for (tag, vr, value) in keys {
        let value = if value.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(*value) };
        object.put(DataElement::new(*tag, *vr, value));
    }
    object
}

/// A string value of a match.
pub fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .element(tag)
        .ok()
        .and_then(|element| element.to_str().ok())
        .map(|value| value.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

pub fn options(called: &str) -> ClientOptions {
    ClientOptions::new(OUR_AE, called)
}

/// Verification and the three Study Root models.
pub fn query_contexts() -> Vec<ProposedContext> {
    vec![
        ProposedContext::verification(),
        ProposedContext::new(uids::STUDY_ROOT_FIND, UNCOMPRESSED),
        ProposedContext::new(uids::STUDY_ROOT_MOVE, UNCOMPRESSED),
    ]
}

/// Study Root GET plus every storage class with the SCP role.
pub fn get_contexts() -> Vec<ProposedContext> {
    let mut contexts = vec![ProposedContext::new(uids::STUDY_ROOT_GET, UNCOMPRESSED)];
    contexts.extend(ProposedContext::storage_scp(UNCOMPRESSED));
    contexts
}

/// SOP Instance UID -> data set, for files a dcmtk tool wrote (file meta stripped).
pub fn data_sets_in(dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut sets = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let part = hie_testkit::part10::read(&path);
            sets.insert(part.sop_instance_uid, (part.transfer_syntax_uid, part.data_set));
        }
    }
    sets
}

/// A temporary directory for one test.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("hie-dicom-net-{name}-")).tempdir().unwrap()
}

/// (Series Instance UID, SOP Instance UID) of each file, read with dicom-object.
pub fn instance_uids(files: &[PathBuf]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|path| {
            let object = dicom_object::open_file(path).unwrap();
            (text(&object, tags::SERIES_INSTANCE_UID), text(&object, tags::SOP_INSTANCE_UID))
        })
        .collect()
}

/// Waits (at most 10 s, polling) until `done` holds; panics with `what` otherwise. For effects
/// that another task completes a moment after the peer's exchange ended.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("not reached within 10 s: {what}");
}

/// C-FIND of IDS-DEPT002-a, loaded into the peer of `association`, at study, series and image
/// level: one study, and the series and images its files hold. `series_key_at_image_level`: the
/// IMAGE identifier names the Series Instance UID as well (a strictly hierarchical SCP such as
/// dcmqrscp needs it). Returns the IMAGE identifier for further queries.
pub async fn assert_finds_ids_dept002_a(
    association: &mut hie_dicom_net::Association,
    limits: &hie_dicom_net::FindLimits,
    series_key_at_image_level: bool,
) -> InMemDicomObject {
    use std::collections::BTreeSet;

    use hie_dicom_net::scu;
    use hie_testkit::fixtures::IDS_DEPT002_A;

    let study = identifier(
        "STUDY",
        &[(tags::PATIENT_ID, VR::LO, IDS_DEPT002_A.patient_id), (tags::STUDY_INSTANCE_UID, VR::UI, "")],
    );
    let found = scu::find(association, uids::STUDY_ROOT_FIND, &study, limits).await.unwrap();
    assert_eq!(found.status, Status::SUCCESS);
    assert_eq!(found.matches.len(), 1);
    assert_eq!(text(&found.matches[0], tags::STUDY_INSTANCE_UID), IDS_DEPT002_A.study_instance_uid);

    let loaded = instance_uids(&IDS_DEPT002_A.images());
    let series = identifier(
        "SERIES",
        &[
            (tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT002_A.study_instance_uid),
            (tags::SERIES_INSTANCE_UID, VR::UI, ""),
        ],
    );
    let found = scu::find(association, uids::STUDY_ROOT_FIND, &series, limits).await.unwrap();
    let found_series: BTreeSet<String> = found.matches.iter().map(|m| text(m, tags::SERIES_INSTANCE_UID)).collect();
    let loaded_series: BTreeSet<String> = loaded.iter().map(|(series, _)| series.clone()).collect();
    assert_eq!(found_series.len(), IDS_DEPT002_A.n_series);
    assert_eq!(found_series, loaded_series);

    let mut image_keys = vec![(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT002_A.study_instance_uid)];
    if series_key_at_image_level {
        image_keys.push((tags::SERIES_INSTANCE_UID, VR::UI, ""));
    }
    image_keys.push((tags::SOP_INSTANCE_UID, VR::UI, ""));
    let image = identifier("IMAGE", &image_keys);
    let found = scu::find(association, uids::STUDY_ROOT_FIND, &image, limits).await.unwrap();
    let found_images: BTreeSet<String> = found.matches.iter().map(|m| text(m, tags::SOP_INSTANCE_UID)).collect();
    let loaded_images: BTreeSet<String> = loaded.iter().map(|(_, sop)| sop.clone()).collect();
    assert_eq!(found.matches.len(), IDS_DEPT002_A.n_images);
    assert_eq!(found_images, loaded_images);
    image
}
