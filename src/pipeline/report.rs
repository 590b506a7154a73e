//! How a long run tells its caller how far it has come, without the library drawing or printing anything:
//! the CLI draws a bar on stderr, Python draws one when asked, a server or a test says nothing.

use std::sync::Arc;

/// What a long run reports as it goes. Called from the run's own thread; implementations must be cheap.
pub trait Reporter: Send + Sync {
    /// A phase of `total` steps begins; `unit` names what a step is ("photos", "regions refined").
    fn phase(&self, unit: &str, total: u64);
    /// `steps` more steps of the current phase are done.
    fn advance(&self, steps: u64);
    /// How the phase is going, in words ("120/400 regions (3.1 regions/s)").
    fn status(&self, text: String);
    /// The run is over (finished or stopped): what the reporter shows can go.
    fn finish(&self);
    /// An input passed over before any work (a missing photo, a region off its photo), and why.
    fn skipped(&self, item: &str, why: &str);
}

/// Reports nothing but what was passed over, to the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Reporter for Quiet {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn status(&self, _: String) {}
    fn finish(&self) {}
    fn skipped(&self, item: &str, why: &str) {
        tracing::info!("skipped {item}: {why}");
    }
}

/// A reporter a run and the job that starts it can share; [`Quiet`] unless a front door gives one.
#[derive(Clone)]
pub struct SharedReporter(Arc<dyn Reporter>);

impl SharedReporter {
    pub fn new(reporter: impl Reporter + 'static) -> Self {
        Self(Arc::new(reporter))
    }
}

impl Default for SharedReporter {
    fn default() -> Self {
        Self::new(Quiet)
    }
}

impl std::fmt::Debug for SharedReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedReporter")
    }
}

impl std::ops::Deref for SharedReporter {
    type Target = dyn Reporter;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
