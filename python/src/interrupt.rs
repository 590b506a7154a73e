//! Long calls run with the GIL released on a worker thread while the calling thread watches for Ctrl-C: an
//! interrupt sets the library's cancel flag, waits for the work to reach a safe point (so that what was
//! committed stays consistent), and raises the signal handler's exception, `KeyboardInterrupt` by default.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

use regionseek::cancel::Cancel;

use crate::errors::RegionseekError;

/// Short enough that Ctrl-C feels immediate, long enough not to spin.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Runs `work` on a scoped thread with the GIL released; on a signal whose handler raises, asks the work to
/// stop through `cancel`, waits for it, and returns the handler's exception.
pub fn interruptible<T: Send>(
    py: Python<'_>,
    cancel: &Cancel,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    std::thread::scope(|scope| {
        let (done_tx, mut done_rx) = mpsc::channel::<()>();
        let handle = scope.spawn(move || {
            let out = work();
            let _ = done_tx.send(());
            out
        });
        let mut interrupted: Option<PyErr> = None;
        loop {
            // The receiver travels into the GIL-free closure and back (it is Send, not Sync).
            let (finished, rx) = py.detach(move || {
                let finished = !matches!(
                    done_rx.recv_timeout(SIGNAL_POLL),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                (finished, done_rx)
            });
            done_rx = rx;
            if finished {
                break;
            }
            if interrupted.is_none() {
                if let Err(e) = py.check_signals() {
                    cancel.cancel();
                    interrupted = Some(e);
                }
            }
        }
        let out = handle
            .join()
            .map_err(|_| RegionseekError::new_err("internal error: the computation panicked"))?;
        match interrupted {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}
