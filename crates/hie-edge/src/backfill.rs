//! `hie-edge backfill`: publish the PACS's older studies. The command lists the studies dated on
//! or after a date, records an explicit request for each in the broker's store (the running broker
//! builds and publishes them, as for any request), then follows them with a progress bar until
//! each has settled (published, unchanged and registered, failed, or gone), or until nothing has
//! moved for a while (is the broker running?).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{EXIT_CONFIG, EXIT_RUNTIME, load_or_report, one_shot_runtime};

/// How often the store is read while following.
const POLL: Duration = Duration::from_secs(1);

pub fn run(path: &Path, since: &str, stall_timeout: Duration) -> ExitCode {
    let config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let date: String = since.chars().filter(char::is_ascii_digit).collect();
    if date.len() != 8 || since.chars().any(|c| !(c.is_ascii_digit() || c == '-')) {
        eprintln!("backfill: --since {since:?}: expected YYYYMMDD or YYYY-MM-DD");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (Some(pacs_settings), Some(_)) = (&config.pacs, &config.registry) else {
        eprintln!("{}: backfill needs [pacs] and [registry]", path.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let pacs = crate::pacs::open(pacs_settings).await?;
        let studies = pacs.list_studies(&date).await?;
        let store = crate::app::open_store(&config).await?;
        for study in &studies {
            hie_broker::studies::request(&store, &study.study_instance_uid).await?;
        }
        println!("backfill: {} studies dated {date} or later queued", studies.len());
        let uids: Vec<String> = studies.into_iter().map(|study| study.study_instance_uid).collect();
        let outcome = follow(&store, &uids, stall_timeout).await;
        store.close().await;
        outcome
    });
    match result {
        Ok(Settled { published, failed, gone, stalled }) => {
            println!("backfill: {published} published, {failed} failed, {gone} gone, {stalled} not settled");
            if stalled > 0 {
                eprintln!(
                    "backfill: nothing moved for {}s; is the broker (hie-edge serve) running?",
                    stall_timeout.as_secs()
                );
            }
            if failed > 0 || stalled > 0 { ExitCode::from(EXIT_RUNTIME) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            eprintln!("backfill: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[derive(Debug, Default)]
struct Settled {
    published: usize,
    failed: usize,
    gone: usize,
    stalled: usize,
}

async fn follow(store: &hie_store::Store, uids: &[String], stall_timeout: Duration) -> anyhow::Result<Settled> {
    let bar = indicatif::ProgressBar::new(u64::try_from(uids.len()).unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} settled {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut settled = BTreeSet::new();
    let mut tally = Settled::default();
    let mut last_progress = Instant::now();
    while settled.len() < uids.len() {
        let open: Vec<&String> = uids.iter().filter(|uid| !settled.contains(*uid)).collect();
        for uid in open {
            if let Some(outcome) = outcome(store, uid).await? {
                match outcome {
                    Outcome::Published => tally.published += 1,
                    Outcome::Failed => tally.failed += 1,
                    Outcome::Gone => tally.gone += 1,
                }
                settled.insert(uid.clone());
                last_progress = Instant::now();
            }
        }
        bar.set_position(u64::try_from(settled.len()).unwrap_or(u64::MAX));
        bar.set_message(format!("({} published, {} failed)", tally.published, tally.failed));
        if settled.len() == uids.len() {
            break;
        }
        if last_progress.elapsed() > stall_timeout {
            tally.stalled = uids.len() - settled.len();
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    bar.finish();
    Ok(tally)
}

enum Outcome {
    Published,
    Failed,
    Gone,
}

/// Where a requested study stands: settled once its state says so and its latest version's
/// publication is done (or failed).
async fn outcome(store: &hie_store::Store, uid: &str) -> anyhow::Result<Option<Outcome>> {
    let Some(study) = store.study(uid).await? else { return Ok(None) };
    Ok(match study.state.as_str() {
        "failed" => Some(Outcome::Failed),
        "gone" => Some(Outcome::Gone),
        "current" => match store.publication_of(uid, study.manifest_version).await? {
            Some(submission) if submission.state == "done" => Some(Outcome::Published),
            Some(submission) if submission.state == "failed" => Some(Outcome::Failed),
            _ => None,
        },
        _ => None,
    })
}
