//! A [`Reporter`] that draws a progress bar on stderr, for the front doors that run in a terminal (the CLI,
//! Python's `index_photos(progress=True)`); behind the `progress-bar` feature so that the library itself
//! draws nothing.

use std::sync::Mutex;

use super::Reporter;
use indicatif::{ProgressBar, ProgressStyle};

/// One bar, restyled for each phase of a run (or none, under `--json`); lines about skipped inputs are
/// printed above it either way.
pub struct Bar {
    bar: Mutex<ProgressBar>,
    draw: bool,
}

impl Bar {
    pub fn new(draw: bool) -> Self {
        Self {
            bar: Mutex::new(ProgressBar::hidden()),
            draw,
        }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, ProgressBar> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reporter for Bar {
    fn phase(&self, unit: &str, total: u64) {
        let template = format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}}) {{msg}}"
        );
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let mut bar = self.bar();
        bar.finish_and_clear();
        *bar = if self.draw {
            ProgressBar::new(total).with_style(style)
        } else {
            ProgressBar::hidden()
        };
    }

    fn advance(&self, steps: u64) {
        self.bar().inc(steps);
    }

    fn status(&self, text: String) {
        self.bar().set_message(text);
    }

    fn finish(&self) {
        self.bar().finish_and_clear();
    }

    fn skipped(&self, item: &str, why: &str) {
        self.bar().suspend(|| eprintln!("skipped {item}: {why}"));
    }
}
