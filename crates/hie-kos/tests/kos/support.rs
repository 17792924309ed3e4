//! Shared test helpers: fixture paths, evidence from a folder, fixed options and UIDs, and the
//! external validators (dciodvfy from dicom3tools, dsrdump from dcmtk).

use std::path::{Path, PathBuf};
use std::process::Command;

use hie_kos::{FileDicomObject, InMemDicomObject, KosOptions, RootedUids, StudyEvidence, StudyEvidenceBuilder};

pub const UID_ROOT: &str = "1.2.826.0.1.3680043.10.999";
pub const RETRIEVE_AE_TITLE: &str = "HIE_EDGE";
pub const REPOSITORY_UNIQUE_ID: &str = "1.3.6.1.4.1.21367.13.80.110";

pub fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

/// The study folders under test_data/studies, sorted.
pub fn study_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(test_data().join("studies"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Every file below `dir`, sorted, except the study's own manifest `kos.dcm`.
pub fn instance_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "kos.dcm" {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Evidence from every instance file of a study folder, as the folder adapter would gather it.
pub fn evidence_for(dir: &Path) -> StudyEvidence {
    let mut builder = StudyEvidenceBuilder::new();
    for file in instance_files(dir) {
        builder
            .add_part10(&std::fs::read(&file).unwrap())
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    }
    assert_eq!(builder.n_skipped(), 0);
    builder.build().unwrap()
}

pub fn options() -> KosOptions {
    let mut options = KosOptions::new(RETRIEVE_AE_TITLE, REPOSITORY_UNIQUE_ID, "20261128", "101500.123");
    options.institution_name = Some("Test Hospital".to_owned());
    options
}

pub fn uids() -> RootedUids {
    RootedUids::with_unique(UID_ROOT, 1_764_325_000_000_000_123).unwrap()
}

pub fn build(evidence: &StudyEvidence) -> FileDicomObject<InMemDicomObject> {
    hie_kos::build_kos(evidence, &options(), &mut uids()).unwrap()
}

/// Output of an external tool: exit success and its stdout + stderr lines.
pub struct ToolRun {
    pub success: bool,
    pub lines: Vec<String>,
}

pub fn run_tool(tool: &str, args: &[&str], file: &Path) -> ToolRun {
    let output = Command::new(tool).args(args).arg(file).output().unwrap_or_else(|error| {
        panic!("cannot run {tool} ({error}); install it: apt-get install -y dicom3tools dcmtk (scripts/test.sh does)")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ToolRun { success: output.status.success(), lines: text.lines().map(str::to_owned).collect() }
}

/// Writes the manifest to a temporary file and runs `dciodvfy -new` on it: asserts exit status 0 and
/// no Error line; returns the warnings.
pub fn assert_dciodvfy_clean(label: &str, bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kos.dcm");
    std::fs::write(&path, bytes).unwrap();
    let run = run_tool("dciodvfy", &["-new"], &path);
    let errors: Vec<&String> = run.lines.iter().filter(|line| line.starts_with("Error")).collect();
    assert!(run.success && errors.is_empty(), "{label}: dciodvfy failed:\n{}", run.lines.join("\n"));
    assert!(run.lines.iter().any(|line| line == "KeyObjectSelectionDocument"), "{label}: {:?}", run.lines);
    let warnings: Vec<String> = run.lines.into_iter().filter(|line| line.starts_with("Warning")).collect();
    for warning in &warnings {
        println!("{label}: dciodvfy {warning}");
    }
    let dump = run_tool("dsrdump", &[], &path);
    assert!(dump.success, "{label}: dsrdump failed:\n{}", dump.lines.join("\n"));
    let text = dump.lines.join("\n");
    assert!(text.contains("Key Object Selection Document"), "{label}: {text}");
    assert!(
        !text.to_lowercase().contains("warning") && !text.to_lowercase().contains("error"),
        "{label}: dsrdump: {text}"
    );
    warnings
}
