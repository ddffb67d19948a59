//! The one bounded job runner: images made `parallel` at a time, each timed, each failure
//! recorded with its reason (never propagated: the others go on), a progress line per
//! finished image, the records sorted by image.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::{StreamExt as _, stream};

use crate::adapters::actions_env::ActionsEnv;
use crate::core::report::{ImageRecord, Outcome};
use crate::core::summary::human_secs;

/// Counts finished images and logs a progress line for each (done/total, elapsed, rough
/// remaining): a redrawn bar on a terminal, lines in an Actions log or a file.
struct Progress {
    total: usize,
    done: AtomicUsize,
    started: Instant,
    redraw: bool,
}

impl Progress {
    fn new(total: usize, actions: &ActionsEnv) -> Progress {
        Progress { total, done: AtomicUsize::new(0), started: Instant::now(), redraw: actions.redraws_progress() }
    }

    /// Records one finished image: a redrawn bar on a terminal, a log line elsewhere (and
    /// always for a failure).
    fn finished(&self, r: &ImageRecord) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if done < self.total { elapsed / done as f64 * (self.total - done) as f64 } else { 0.0 };
        let (elapsed, left) = (human_secs(elapsed), human_secs(left));
        if self.redraw && r.error.is_none() {
            const WIDTH: usize = 30;
            let filled = WIDTH * done / self.total.max(1);
            eprint!(
                "\r\x1b[2K[{}{}] {done}/{} elapsed {elapsed}, ~{left} left",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                self.total
            );
            if done == self.total {
                eprintln!();
            }
            return;
        }
        if self.redraw {
            eprint!("\r\x1b[2K");
        }
        let why = r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        tracing::info!(
            "[{done}/{}] {} {} in {:.1}s; elapsed {elapsed}, ~{left} left{why}",
            self.total,
            r.image,
            r.status.as_str(),
            r.seconds
        );
    }
}

/// Makes each job of `todo` through `work`, `parallel` at a time, with a progress line per
/// finished image; returns `done` (the records of images that needed no work) and the new
/// records together, sorted by image.
pub(crate) async fn run_jobs<J, Fut>(
    mut done: Vec<ImageRecord>,
    todo: Vec<J>,
    parallel: usize,
    actions: &ActionsEnv,
    work: impl Fn(J) -> Fut,
) -> Vec<ImageRecord>
where
    Fut: Future<Output = ImageRecord>,
{
    let progress = Progress::new(todo.len(), actions);
    let progress = &progress;
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|job| {
            let made = work(job);
            async move {
                let r = made.await;
                progress.finished(&r);
                r
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    done.extend(made);
    done.sort_by(|a, b| a.image.cmp(&b.image));
    done
}

/// Times `work` and fills in `record`: status `success` when it succeeds, else failed with
/// the reason.
pub(crate) async fn attempt(mut record: ImageRecord, success: Outcome, work: impl Future<Output = anyhow::Result<()>>) -> ImageRecord {
    let t = Instant::now();
    let result = work.await;
    let seconds = t.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            record.status = success;
            record.took(seconds, None)
        }
        Err(e) => {
            record.status = Outcome::Failed;
            record.took(seconds, Some(format!("{e:#}")))
        }
    }
}
