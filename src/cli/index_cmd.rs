//! `regionseek index`: a folder of photos and their regions into a region index, by a named pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use regionseek::pipeline::{
    IndexJob, JobError, NeedsRegions, RegionSource, SamSetup, SharedReporter,
};
use serde_json::json;

use super::args::ModelArgs;
use super::output::{print_json, with_wait_hint};
use super::sam_cmd::SamModelArgs;
use regionseek::pipeline::bar::Bar;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("regions").required(false).args(["coco", "boxes", "masks"]))]
pub struct IndexArgs {
    /// The folder the photos' paths are relative to. Without --coco, --boxes or --masks: a photo library,
    /// every photo under it, recursively (hidden files and non-photos passed over and counted).
    images: PathBuf,
    /// COCO instances JSON: its annotations (polygons/RLE, boxes, categories) are the regions.
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Boxes JSON: `[{"image": "a.jpg", "box": [x0, y0, x1, y1], "id": "r1", "label": "dog"}, ...]`.
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// A folder of mask PNGs named `<image stem>_<region id>.png`.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// A pipeline name (pipelines/NAME.toml) or a path to a spec file. Default: the one that fits the
    /// regions given: `boxes` for --boxes (`boxes-sam` when --sam is given too), `gt-masks` for --coco or
    /// --masks, and `library` for a plain folder (searchable at once, refined by MaskInversion; with --sam its
    /// regions are SAM's automatic masks).
    #[arg(long)]
    pipeline: Option<String>,
    /// The index directory (created if absent; rerunning resumes it).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sam: SamModelArgs,
    /// Index only the first N photos of the input (for trials).
    #[arg(long)]
    limit: Option<usize>,
    /// Index only shard K of N (`K/N`, K from 0): photos are split by a hash of their name, so N runs with
    /// 0/N … N−1/N index each photo exactly once (see `python -m regionseek.ray index`).
    #[arg(long, value_parser = regionseek::pipeline::Shard::parse)]
    shard: Option<regionseek::pipeline::Shard>,
    /// When another process is writing the index: wait for it to finish instead of exiting at once.
    #[arg(long)]
    wait: bool,
    /// Photos with more pixels are refused from their header, before decoding (default: Pillow's
    /// decompression-bomb limit). Peak memory grows with this times the batch size.
    #[arg(long, default_value_t = regionseek::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Turn each photo upright by its EXIF orientation before its regions are read (for phone photos whose
    /// boxes or masks were drawn upright). Off by default: photos are taken in their stored frame, as Pillow,
    /// the reference and COCO's annotations take them. Recorded per row; the server's pictures follow it.
    #[arg(long)]
    exif_rotate: bool,
    /// Keep running: after the first run, each change to IMAGES_DIR (photos added, edited, moved, deleted) is
    /// synced into the index once the folder has been quiet for half a second; `serve` on the same index picks
    /// up each commit. Ctrl-C stops.
    #[arg(long)]
    watch: bool,
    /// With --watch: look for changes every this many seconds instead of being told by the system (network
    /// drives, where the system says nothing).
    #[arg(long, requires = "watch")]
    watch_poll_s: Option<f64>,
    /// Keep the rows of photos no longer in IMAGES_DIR (or the annotation file): for a removable drive that is
    /// not plugged in. By default a rerun deletes them, replaces edited photos' rows and carries moved photos'
    /// rows to their new path, so that the index answers as a fresh index of the folder would.
    #[arg(long)]
    no_delete: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(a: IndexArgs) -> anyhow::Result<ExitCode> {
    let regions = match (&a.coco, &a.boxes, &a.masks) {
        (Some(c), _, _) => RegionSource::Coco(c.clone()),
        (_, Some(b), _) => RegionSource::Boxes(b.clone()),
        (_, _, Some(m)) => RegionSource::MaskDir(m.clone()),
        _ => RegionSource::FindThem,
    };
    let pipeline = a.pipeline.clone().unwrap_or_else(|| {
        regionseek::pipeline::default_pipeline(&regions, a.sam.sam.is_some()).to_string()
    });
    let job = IndexJob {
        images: a.images.clone(),
        regions,
        pipeline,
        out: a.out.clone(),
        limit: a.limit,
        shard: a.shard,
        wait: regionseek::index::LockWait::forever_if(a.wait),
        decode: regionseek::decode::DecodeOptions {
            max_pixels: a.max_pixels,
            exif_rotate: a.exif_rotate,
        },
        sam: SamSetup {
            dir: a.sam.sam.clone(),
            device: a.sam.sam_device,
            threads: a.sam.sam_threads,
        },
        reporter: SharedReporter::new(Bar::new(!a.json)),
        cancel: stop_on_signal(),
        keep_vanished: a.no_delete,
    };
    // Watching from before the first run: a change made as soon as its report is out is not missed.
    let changes = match a.watch {
        // (A folder that is not there is refused by the run, in its words.)
        true if a.images.is_dir() => Some(FolderChanges::watch(&a.images, &a.out, a.watch_poll_s)?),
        _ => None,
    };
    let mut loaded: Option<Arc<regionseek::clip::ClipModel>> = None;
    let report = job
        .clone()
        .run(|| {
            let model = Arc::new(a.model.load()?);
            loaded = Some(model.clone());
            Ok(model)
        })
        .map_err(in_words)?;
    print_report(&a, &report)?;
    match (changes, loaded) {
        (Some(changes), Some(model)) if !job.cancel.is_cancelled() => {
            watch(&a, job, model, changes)
        }
        _ => Ok(exit_code(&report)),
    }
}

/// Keeps the index in line with the folder: after each change (debounced), the same run again, with the
/// model loaded once. Ends on Ctrl-C.
fn watch(
    a: &IndexArgs,
    job: IndexJob,
    model: Arc<regionseek::clip::ClipModel>,
    changes: FolderChanges,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "watching {} for changes ({}); Ctrl-C stops",
        a.images.display(),
        changes.how
    );
    let mut last = ExitCode::SUCCESS;
    while changes.next_batch(&job.cancel) {
        let report = job.clone().run(|| Ok(model.clone())).map_err(in_words)?;
        print_report(a, &report)?;
        last = exit_code(&report);
        if report.interrupted {
            break;
        }
    }
    Ok(last)
}

/// How long the folder must stay quiet before a change is acted on: a copy of many photos is one run, not
/// one per photo.
const QUIET_BEFORE_SYNC: std::time::Duration = std::time::Duration::from_millis(500);

/// The changes under a photo folder, from the OS or, with `--watch-poll`, by polling (network drives, where
/// the OS says nothing).
struct FolderChanges {
    events: std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    /// Kept alive: dropping it stops the events.
    _watcher: Box<dyn notify::Watcher>,
    /// Changes in the index's own folder (when it lies inside the photos) are not the photos'.
    index_dir: std::path::PathBuf,
    how: &'static str,
}

impl FolderChanges {
    fn watch(
        images: &std::path::Path,
        index: &std::path::Path,
        poll_s: Option<f64>,
    ) -> anyhow::Result<Self> {
        let (tx, events) = std::sync::mpsc::channel();
        let (mut watcher, how): (Box<dyn notify::Watcher>, &'static str) = match poll_s {
            Some(s) => {
                anyhow::ensure!(
                    s.is_finite() && s > 0.0,
                    "--watch-poll takes seconds above 0"
                );
                let config = notify::Config::default()
                    .with_poll_interval(std::time::Duration::from_secs_f64(s));
                (Box::new(notify::PollWatcher::new(tx, config)?), "polling")
            }
            None => (
                Box::new(notify::recommended_watcher(tx)?),
                "told by the system",
            ),
        };
        watcher
            .watch(images, notify::RecursiveMode::Recursive)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot watch {}: {e} (try --watch-poll SECONDS)",
                    images.display()
                )
            })?;
        Ok(Self {
            events,
            _watcher: watcher,
            index_dir: std::fs::canonicalize(index).unwrap_or_else(|_| index.to_path_buf()),
            how,
        })
    }

    /// Whether an event is about the photos (not the index inside their folder, not a hidden file).
    fn about_photos(&self, event: &notify::Result<notify::Event>) -> bool {
        let Ok(event) = event else {
            return true; // a lost event: better a run that finds nothing to do than a missed photo
        };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return false;
        }
        event.paths.iter().any(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            !hidden && !p.starts_with(&self.index_dir)
        })
    }

    /// Waits for a change to the photos, then for the folder to stay quiet; false once `cancel` is set.
    fn next_batch(&self, cancel: &regionseek::cancel::Cancel) -> bool {
        let tick = std::time::Duration::from_millis(100);
        loop {
            if cancel.is_cancelled() {
                return false;
            }
            match self.events.recv_timeout(tick) {
                Ok(event) if self.about_photos(&event) => break,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        let mut last_change = std::time::Instant::now();
        while last_change.elapsed() < QUIET_BEFORE_SYNC {
            if cancel.is_cancelled() {
                return false;
            }
            if let Ok(event) = self.events.recv_timeout(tick) {
                if self.about_photos(&event) {
                    last_change = std::time::Instant::now();
                }
            }
        }
        true
    }
}

fn exit_code(report: &regionseek::pipeline::IndexRunReport) -> ExitCode {
    if report.interrupted {
        ExitCode::from(130)
    } else if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// A failed run's error in the words of this command's flags.
fn in_words(e: anyhow::Error) -> anyhow::Error {
    if let Some(n) = e.downcast_ref::<NeedsRegions>() {
        return anyhow::anyhow!(
                "pipeline {} takes its regions from --coco, --boxes or --masks; for a plain photo folder leave \
                 --pipeline out (the library pipeline), or use --pipeline auto-sam (with --sam DIR) or \
                 --pipeline auto-grid",
                n.pipeline
            );
    }
    match e.downcast_ref::<JobError>() {
            Some(JobError::BoxesNeedABoxPipeline { pipeline }) => anyhow::anyhow!(
                "pipeline {pipeline} embeds given masks, and --boxes gives boxes only: use --pipeline boxes (each \
                 box is its own mask) or --pipeline boxes-sam --sam DIR (SAM's mask for each box), or leave \
                 --pipeline out to get the first"
            ),
            Some(JobError::NoImagesFolder(p)) => {
                anyhow::anyhow!("IMAGES_DIR {} does not exist", p.display())
            }
            _ => match e.downcast::<regionseek::index::IndexError>() {
                Ok(index_error) => with_wait_hint(index_error),
                Err(e) => e,
            },
        }
}

fn print_report(
    a: &IndexArgs,
    report: &regionseek::pipeline::IndexRunReport,
) -> anyhow::Result<()> {
    if a.json {
        print_json(&json!(report))?;
    } else {
        println!(
            "{}: {} photos ({} processed, {} already indexed), {} regions added ({} already indexed), {} failed; \
             {} rows in {}; {:.1} s, {:.2} photos/s, {:.2} regions/s, peak RSS {} MB; model busy {:.0}% of the time{}",
            report.pipeline,
            report.images,
            report.images_processed,
            report.images_skipped,
            report.regions_added,
            report.regions_already_indexed,
            report.failures,
            report.rows_total,
            a.out.display(),
            report.seconds,
            report.images_per_second,
            report.regions_per_second,
            report.peak_rss_mb.map(|m| format!("{m:.0}")).unwrap_or_else(|| "?".into()),
            100.0 * report.model_busy_fraction,
            report
                .gpu_utilisation
                .map(|u| format!(", GPU utilisation {:.0}%", u.mean_percent))
                .unwrap_or_default(),
        );
        if let Some(t) = &report.tiers {
            println!(
                "library: {} photos searchable ({} new: {} regions from {} in {:.1} s, {:.1} photos/s); {} regions \
                 refined by MaskInversion ({} photos, {:.1} s, {:.2} regions/s), {} left to refine{}; passed over: \
                 {} non-photo files, {} hidden",
                t.searchable_photos,
                t.quick_photos,
                t.quick_regions,
                t.regions_from,
                t.quick_seconds,
                t.quick_photos_per_second,
                t.refined_regions,
                t.refined_photos,
                t.refine_seconds,
                t.refined_regions_per_second,
                t.regions_to_refine,
                if report.interrupted { " (interrupted: rerun to continue)" } else { "" },
                report.skipped.non_photos,
                report.skipped.hidden,
            );
        }
        if report.random_model {
            println!(
                "note: the model's weights are random ({}): scores and hits mean nothing; pass --model DIR for a \
                 real one",
                a.model.model
            );
        }
        if report.failures + report.input_issues > 0 {
            if let Some(log) = &report.error_log {
                println!("failures are listed in {}", log.display());
            }
        }
    }
    Ok(())
}

/// A cancel flag that the first Ctrl-C (or SIGTERM) sets: the run stops after the photos under way, commits
/// what was embedded and prints its report (exit 130); a second signal quits at once (what was committed
/// stays, and a rerun resumes after it).
fn stop_on_signal() -> regionseek::cancel::Cancel {
    let cancel = regionseek::cancel::Cancel::default();
    let on_signal = cancel.clone();
    let installed = ctrlc::set_handler(move || {
        if on_signal.is_cancelled() {
            std::process::exit(130);
        }
        on_signal.cancel();
        eprintln!("stopping after the photos under way (Ctrl-C again to quit at once)");
    });
    if let Err(e) = installed {
        tracing::debug!("no signal handler ({e}): Ctrl-C ends the run at once");
    }
    cancel
}
