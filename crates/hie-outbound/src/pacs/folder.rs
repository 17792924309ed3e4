//! The `folder` PACS: a directory tree of DICOM Part 10 files (a mounted archive export, patient
//! media, the quickstart's samples). [`FolderPacs::index`] walks the tree once and maps each Study
//! Instance UID to its files; [`FolderPacs::study_evidence`] reads those files again (they may have
//! changed since) into [`StudyEvidence`].
//!
//! Symbolic links are followed, but each directory is entered once (by its canonical path) and the
//! walk stops at [`MAX_DEPTH`], so a link loop can't make it run forever. DICOMDIR files are
//! skipped: the files themselves are indexed, so the directory record adds nothing. Files that are
//! not readable DICOM (garbage, cut short, without UIDs, larger than [`MAX_FILE_BYTES`]) are
//! counted and skipped, as real archive exports hold such files.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use hie_broker::ports::{
    FoundInstance, InstanceKey, Pacs, PacsError, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary,
};
use hie_kos::{StudyEvidence, StudyEvidenceBuilder, from_instance_header, read_instance_header};
use tokio::sync::RwLock;
use tokio::sync::mpsc;

/// Deepest directory level walked below the root.
pub const MAX_DEPTH: usize = 32;

/// Largest file read; a larger one is skipped rather than pulled into memory whole (the length
/// pre-check needs the whole file).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// The index of a folder PACS.
#[derive(Debug, Clone)]
pub struct FolderPacs {
    root: PathBuf,
    /// Study Instance UID -> files, in walk order (sorted by path per directory).
    studies: BTreeMap<String, Vec<PathBuf>>,
    /// Study Instance UID -> Study Date (DA) of its first file, where it has one.
    study_dates: BTreeMap<String, String>,
    n_skipped: usize,
}

impl FolderPacs {
    /// Walks `root` and indexes every readable DICOM file by study. Fails only when `root` itself
    /// can't be read; unreadable entries below it are counted in [`FolderPacs::n_skipped`].
    pub fn index(root: impl AsRef<Path>) -> Result<FolderPacs, PacsError> {
        let root = root.as_ref().to_path_buf();
        let unreachable = |source: io::Error| PacsError::Unreachable(format!("{}: {source}", root.display()));
        let metadata = fs::metadata(&root).map_err(unreachable)?;
        if !metadata.is_dir() {
            return Err(unreachable(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        // Fail on an unlistable root rather than report an empty PACS.
        fs::read_dir(&root).map_err(unreachable)?;

        let mut pacs =
            FolderPacs { root: root.clone(), studies: BTreeMap::new(), study_dates: BTreeMap::new(), n_skipped: 0 };
        let mut visited = HashSet::new();
        let mut pending = vec![(root, 0_usize)];
        while let Some((dir, depth)) = pending.pop() {
            let Ok(canonical) = fs::canonicalize(&dir) else {
                pacs.n_skipped += 1;
                continue;
            };
            if !visited.insert(canonical) {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                pacs.n_skipped += 1;
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
            paths.sort();
            let mut subdirs = Vec::new();
            for path in paths {
                // fs::metadata follows links; a dangling link is an unreadable entry.
                let Ok(metadata) = fs::metadata(&path) else {
                    pacs.n_skipped += 1;
                    continue;
                };
                if metadata.is_dir() {
                    if depth < MAX_DEPTH {
                        subdirs.push((path, depth + 1));
                    }
                } else if metadata.is_file() && !is_dicomdir(&path) {
                    match read_study_uid(&path) {
                        Some((study, date)) => {
                            if let Some(date) = date {
                                pacs.study_dates.entry(study.clone()).or_insert(date);
                            }
                            pacs.studies.entry(study).or_default().push(path);
                        }
                        None => pacs.n_skipped += 1,
                    }
                }
            }
            // Reversed so that the stack pops directories in name order.
            pending.extend(subdirs.into_iter().rev());
        }
        Ok(pacs)
    }

    /// The folder this index was built from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Study Instance UIDs held, sorted.
    pub fn studies(&self) -> impl Iterator<Item = &str> {
        self.studies.keys().map(String::as_str)
    }

    /// Files indexed (over all studies).
    pub fn n_files(&self) -> usize {
        self.studies.values().map(Vec::len).sum()
    }

    /// Entries skipped while indexing: not DICOM, unreadable, or without UIDs.
    pub fn n_skipped(&self) -> usize {
        self.n_skipped
    }

    /// Reads the study's files into evidence. Files that became unreadable since indexing are
    /// skipped (and logged); the study fails only when none is left.
    pub fn study_evidence(&self, study_instance_uid: &str) -> Result<StudyEvidence, PacsError> {
        let files = self
            .studies
            .get(study_instance_uid)
            .ok_or_else(|| PacsError::UnknownStudy(study_instance_uid.to_owned()))?;
        let mut builder = StudyEvidenceBuilder::for_study(study_instance_uid);
        let mut skipped = 0_usize;
        for path in files {
            let added = match read_file(path) {
                Ok(bytes) => builder.add_part10(&bytes).map(drop).map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = added {
                skipped += 1;
                tracing::warn!(file = %path.display(), %error, "skipped an unreadable file of the study");
            }
        }
        // build() fails only when no instance was added.
        builder.build().map_err(|_| {
            PacsError::BadAnswer(format!(
                "study {study_instance_uid}: no readable instance ({skipped} file(s) skipped)"
            ))
        })
    }

    /// The files of the study holding each of `instances`, with what the headers say (SOP class,
    /// transfer syntax). Reads the study's headers: a folder has no index below the study.
    pub fn locate(&self, instances: &[InstanceKey]) -> Vec<(FoundInstance, PathBuf)> {
        let mut found = Vec::new();
        let Some(study) = instances.first().map(|key| key.study_instance_uid.as_str()) else {
            return found;
        };
        let Some(files) = self.studies.get(study) else { return found };
        let wanted: std::collections::HashMap<&str, &InstanceKey> =
            instances.iter().map(|key| (key.sop_instance_uid.as_str(), key)).collect();
        for path in files {
            let Ok(bytes) = read_file(path) else { continue };
            let Ok(file) = dicom_object::OpenFileOptions::new()
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .from_reader(bytes.as_slice())
            else {
                continue;
            };
            let Ok(header) = from_instance_header(&file) else { continue };
            let Some(key) = wanted.get(header.instance.sop_instance_uid.as_str()) else { continue };
            if key.series_instance_uid != header.series.series_instance_uid {
                continue;
            }
            found.push((
                FoundInstance {
                    key: (*key).clone(),
                    sop_class_uid: header.instance.sop_class_uid,
                    stored_transfer_syntax_uid: Some(file.meta().transfer_syntax().trim_end_matches('\0').to_owned()),
                },
                path.clone(),
            ));
        }
        found
    }

    /// Studies whose first file's Study Date is on or after `from_date`, or that have no date,
    /// with their file counts.
    pub fn list_studies(&self, from_date: &str) -> Vec<StudySummary> {
        self.studies
            .iter()
            .filter(|(study, _)| self.study_dates.get(*study).is_none_or(|date| date.as_str() >= from_date))
            .map(|(study, files)| StudySummary {
                study_instance_uid: study.clone(),
                n_instances: u64::try_from(files.len()).ok(),
            })
            .collect()
    }
}

fn is_dicomdir(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name.eq_ignore_ascii_case("DICOMDIR"))
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_FILE_BYTES {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("{len} bytes, more than {MAX_FILE_BYTES}")));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // take() bounds the read should the file grow after the length was read.
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The file's Study Instance UID and Study Date, when it is readable DICOM with the UIDs a
/// manifest needs.
fn read_study_uid(path: &Path) -> Option<(String, Option<String>)> {
    let bytes = read_file(path).ok()?;
    let header = read_instance_header(&bytes).ok()?;
    let date = header
        .get(dicom_dictionary_std::tags::STUDY_DATE)
        .and_then(|element| element.to_str().ok())
        .map(|date| date.trim().to_owned())
        .filter(|date| !date.is_empty());
    from_instance_header(&header).ok().map(|header| (header.study_instance_uid, date))
}

/// [`FolderPacs`] as the broker's [`Pacs`]: the folder is indexed on first use, again on every
/// poll, and again when a study is asked for that the index does not hold (files copied in since).
/// A folder that can't be read is an unreachable PACS, as a network PACS that is down would be:
/// the broker starts anyway and keeps trying. File reads run on the blocking pool.
#[derive(Debug)]
pub struct FolderAdapter {
    root: PathBuf,
    index: RwLock<Option<Arc<FolderPacs>>>,
}

impl FolderAdapter {
    /// An adapter for the tree under `root`; nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> FolderAdapter {
        FolderAdapter { root: root.into(), index: RwLock::new(None) }
    }

    async fn refresh(&self) -> Result<Arc<FolderPacs>, PacsError> {
        let index = reindex(self.root.clone()).await?;
        *self.index.write().await = Some(Arc::clone(&index));
        Ok(index)
    }
}

impl Pacs for FolderAdapter {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        Box::pin(async move {
            let known = self.index.read().await.clone();
            let index = match known {
                Some(index) if index.studies.contains_key(study_instance_uid) => index,
                _ => self.refresh().await?,
            };
            let study = study_instance_uid.to_owned();
            tokio::task::spawn_blocking(move || index.study_evidence(&study))
                .await
                .map_err(|error| PacsError::Unreachable(format!("reading the folder: {error}")))?
        })
    }

    fn list_studies<'a>(&'a self, from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        Box::pin(async move { Ok(self.refresh().await?.list_studies(from_date)) })
    }

    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(async move {
            let index = self.refresh().await?;
            let instances = instances.to_vec();
            let located = tokio::task::spawn_blocking(move || index.locate(&instances))
                .await
                .map_err(|error| PacsError::Unreachable(format!("reading the folder: {error}")))?;
            Ok(located.into_iter().map(|(found, _)| found).collect())
        })
    }

    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(async move {
            let index = self.refresh().await?;
            let wanted = instances.to_vec();
            let located = tokio::task::spawn_blocking(move || index.locate(&wanted))
                .await
                .map_err(|error| PacsError::Unreachable(format!("reading the folder: {error}")))?;
            let mut report = RetrieveReport::default();
            for key in instances {
                let Some((found, path)) = located.iter().find(|(found, _)| found.key == *key) else {
                    report.failed.push((key.sop_instance_uid.clone(), "not in the folder".to_owned()));
                    continue;
                };
                let stored = found.stored_transfer_syntax_uid.clone().unwrap_or_default();
                if !transfer_syntaxes.is_empty() && !transfer_syntaxes.contains(&stored) {
                    // A folder holds one encoding of each file; converting is not ours to do.
                    report.failed.push((key.sop_instance_uid.clone(), format!("stored in {stored}, not requested")));
                    continue;
                }
                let begin = RetrieveEvent::Begin {
                    sop_class_uid: found.sop_class_uid.clone(),
                    sop_instance_uid: key.sop_instance_uid.clone(),
                    transfer_syntax_uid: stored,
                    part10: true,
                };
                match stream_file(path, begin, &sink).await {
                    Ok(true) => {}
                    // The consumer went away: the retrieval is cancelled.
                    Ok(false) => return Ok(report),
                    Err(error) => {
                        report.failed.push((key.sop_instance_uid.clone(), error.to_string()));
                        continue;
                    }
                }
                report.sent.push(key.sop_instance_uid.clone());
            }
            Ok(report)
        })
    }
}

/// Bytes per retrieval chunk: large enough to be cheap, small enough to keep memory flat.
const RETRIEVE_CHUNK: usize = 256 * 1024;

/// Sends one file as Begin, its bytes chunk by chunk, End. `Ok(false)` when the consumer is gone.
/// A file that fails mid-way is sent as [`RetrieveEvent::Lost`] and reported as an error.
async fn stream_file(path: &Path, begin: RetrieveEvent, sink: &mpsc::Sender<RetrieveEvent>) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    if sink.send(begin).await.is_err() {
        return Ok(false);
    }
    loop {
        let mut chunk = bytes::BytesMut::with_capacity(RETRIEVE_CHUNK);
        let n = match (&mut file).take(RETRIEVE_CHUNK as u64).read_buf(&mut chunk).await {
            Ok(n) => n,
            Err(error) => {
                let _ = sink.send(RetrieveEvent::Lost(error.to_string())).await;
                return Err(error);
            }
        };
        if n == 0 {
            break;
        }
        if sink.send(RetrieveEvent::Data(chunk.freeze())).await.is_err() {
            return Ok(false);
        }
    }
    Ok(sink.send(RetrieveEvent::End).await.is_ok())
}

async fn reindex(root: PathBuf) -> Result<Arc<FolderPacs>, PacsError> {
    tokio::task::spawn_blocking(move || FolderPacs::index(root).map(Arc::new))
        .await
        .map_err(|error| PacsError::Unreachable(format!("indexing the folder: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY_002: &str = "1.3.6.1.4.1.21367.201599.1.201604020954059";
    const STUDY_024: &str = "1.3.6.1.4.1.21367.201599.1.201604020956016";

    fn fixture_images(study: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies").join(study).join("images")
    }

    fn copy_images(from: &Path, to: &Path) -> usize {
        fs::create_dir_all(to).unwrap();
        let mut n = 0;
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn two_studies_are_indexed_and_garbage_and_truncated_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let n_002 = copy_images(&fixture_images("IDS-DEPT002-a"), &dir.path().join("a/IDS-DEPT002-a"));
        let n_024 = copy_images(&fixture_images("IDS-DEPT024-a"), &dir.path().join("b/deeper/IDS-DEPT024-a"));
        fs::write(dir.path().join("a/notes.txt"), b"not DICOM at all").unwrap();
        let whole = fs::read(fixture_images("IDS-DEPT024-a").join("000000.dcm")).unwrap();
        // Cut inside the header: a file cut in its pixel data still has a readable header.
        fs::write(dir.path().join("b/truncated.dcm"), &whole[..400]).unwrap();
        fs::write(dir.path().join("DICOMDIR"), b"DICOMDIR records are not read").unwrap();

        let pacs = FolderPacs::index(dir.path()).unwrap();
        assert_eq!(pacs.studies().collect::<Vec<_>>(), [STUDY_002, STUDY_024]);
        assert_eq!(pacs.n_files(), n_002 + n_024);
        assert_eq!(pacs.n_skipped(), 2, "the text file and the truncated file");

        let evidence = pacs.study_evidence(STUDY_002).unwrap();
        assert_eq!(evidence.study_instance_uid, STUDY_002);
        assert_eq!(evidence.n_instances(), n_002);
        assert_eq!(evidence.series.len(), 2);
        assert_eq!(pacs.study_evidence(STUDY_024).unwrap().n_instances(), n_024);
    }

    #[test]
    fn an_unknown_study_is_named() {
        let dir = tempfile::tempdir().unwrap();
        copy_images(&fixture_images("IDS-DEPT024-a"), dir.path());
        let pacs = FolderPacs::index(dir.path()).unwrap();
        let error = pacs.study_evidence("1.2.3.4").unwrap_err();
        assert_eq!(error, PacsError::UnknownStudy("1.2.3.4".to_owned()));
        assert_eq!(error.to_string(), "study 1.2.3.4 is not in the PACS");
    }

    #[test]
    fn a_missing_folder_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let error = FolderPacs::index(&missing).unwrap_err();
        assert!(matches!(error, PacsError::Unreachable(_)), "{error:?}");
        assert!(error.to_string().starts_with("PACS unreachable: "), "{error}");
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(FolderPacs::index(&file), Err(PacsError::Unreachable(_))));
    }

    #[test]
    fn files_gone_since_indexing_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let n = copy_images(&fixture_images("IDS-DEPT024-a"), dir.path());
        let pacs = FolderPacs::index(dir.path()).unwrap();
        fs::remove_file(dir.path().join("000000.dcm")).unwrap();
        assert_eq!(pacs.study_evidence(STUDY_024).unwrap().n_instances(), n - 1);
        for entry in fs::read_dir(dir.path()).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let error = pacs.study_evidence(STUDY_024).unwrap_err();
        assert!(
            matches!(&error, PacsError::BadAnswer(text) if text.contains(&format!("{n} file(s) skipped"))),
            "{error:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_ends_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        copy_images(&fixture_images("IDS-DEPT024-a"), &dir.path().join("study"));
        std::os::unix::fs::symlink(dir.path(), dir.path().join("study/loop")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
        let pacs = FolderPacs::index(dir.path()).unwrap();
        assert_eq!(pacs.studies().collect::<Vec<_>>(), [STUDY_024]);
        assert_eq!(pacs.n_files(), 10, "each file once, though reachable through the loop");
        assert_eq!(pacs.n_skipped(), 1, "the dangling link");
    }
}
