//! One writer per index directory: an OS advisory lock (`flock`) on `writer.lock`, held for a writer's whole
//! life. The kernel drops it when the holder exits, however it exits, so a lock can never outlive a dead
//! process; the file's text (pid, start time) only serves to name the holder in messages and to notice that
//! the last writer ended without a clean release.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{files, IndexError};

/// What a second writer does when the directory is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockWait {
    /// Fail at once, naming the holder.
    #[default]
    No,
    /// Wait until the holder is done, however long.
    Forever,
    /// Wait at most this long, then fail naming the holder.
    For(Duration),
}

impl LockWait {
    /// A front door's yes/no "wait for the other writer" flag.
    pub fn forever_if(wait: bool) -> Self {
        if wait {
            LockWait::Forever
        } else {
            LockWait::No
        }
    }
}

#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
    dir: PathBuf,
}

/// Who holds (or last held) a lock, as written in the lock file.
fn holder_text(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "a process that has not written its pid yet".to_string()
    } else {
        text.to_string()
    }
}

fn pid_in(text: &str) -> Option<u32> {
    text.split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
}

impl WriterLock {
    /// Takes the writer lock of `dir`, creating the directory if needed.
    pub fn acquire(dir: &Path, wait: LockWait) -> Result<Self, IndexError> {
        let path = dir.join(files::LOCK);
        let mut file = open_lock_file(dir, &path)?;
        let started = Instant::now();
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) if still_at(&file, &path) => break,
                // The holder removed the lock file before letting go (a run that failed before its first
                // commit removes the folder it made): lock the file the path names now instead.
                Ok(()) => file = open_lock_file(dir, &path)?,
                Err(TryLockError::WouldBlock) => {
                    let holder = holder_text(&mut file);
                    let give_up = match wait {
                        LockWait::No => true,
                        LockWait::Forever => false,
                        LockWait::For(limit) => started.elapsed() >= limit,
                    };
                    if give_up {
                        return Err(IndexError::Locked {
                            dir: dir.to_path_buf(),
                            holder,
                        });
                    }
                    if !announced {
                        tracing::warn!(
                            "{} is being written by {holder}; waiting for it to finish",
                            dir.display()
                        );
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(TryLockError::Error(e)) => return Err(IndexError::io(&path)(e)),
            }
        }
        // A lock file that still names a process means that process ended without releasing cleanly
        // (killed, crashed): the kernel released its lock; its uncommitted files are cleaned up on open.
        let previous = holder_text(&mut file);
        if let Some(pid) = pid_in(&previous) {
            if pid != std::process::id() {
                tracing::warn!(
                    "the previous writer of {} ({previous}) ended without releasing its lock; \
                     its uncommitted work is discarded and committed rows are kept",
                    dir.display()
                );
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The busy message quotes this line to whoever waits: a date, not a count of seconds.
        let me = format!(
            "pid {} started {} ({})\n",
            std::process::id(),
            utc_text(now),
            std::env::args().next().unwrap_or_default()
        );
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.sync_data())
            .map_err(IndexError::io(&path))?;
        Ok(Self {
            file,
            path,
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file while still holding it, then lets go: a waiter then finds the path gone and
    /// locks a new file (see [`still_at`]), so that no two writers ever hold locks on different files.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The index directory this lock guards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Cleared before the unlock so that the next writer can tell a clean release from a dead holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_first_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path(), LockWait::No).unwrap();
        let err = WriterLock::acquire(dir.path(), LockWait::No).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        let err = WriterLock::acquire(dir.path(), LockWait::For(Duration::from_millis(300)));
        assert!(matches!(err, Err(IndexError::Locked { .. })));
        drop(first);
        WriterLock::acquire(dir.path(), LockWait::No).unwrap();
    }

    #[test]
    fn a_waiting_writer_proceeds_when_the_holder_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path(), LockWait::No).unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || WriterLock::acquire(&path, LockWait::Forever));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "the waiter must wait for the holder");
        drop(first);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn a_lock_file_removed_by_its_holder_is_never_held_twice() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path(), LockWait::No).unwrap();
        let path = dir.path().to_path_buf();
        // The waiter has the old file open and blocks on it.
        let waiter = std::thread::spawn(move || WriterLock::acquire(&path, LockWait::Forever));
        std::thread::sleep(Duration::from_millis(300));
        first.remove();
        let second = waiter.join().unwrap().unwrap();
        // The waiter now holds the file at the path, so a newcomer is refused rather than let in beside it.
        assert!(matches!(
            WriterLock::acquire(dir.path(), LockWait::No),
            Err(IndexError::Locked { .. })
        ));
        drop(second);
        assert!(WriterLock::acquire(dir.path(), LockWait::No).is_ok());
    }
}

/// The lock file of `dir`, made (with the folder) if absent; its content is kept for the busy message.
fn open_lock_file(dir: &Path, path: &Path) -> Result<std::fs::File, IndexError> {
    std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(IndexError::io(path))
}

/// Whether the file a lock was taken on is still the one at its path.
fn still_at(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since the Unix epoch (the civil-from-days algorithm of H. Hinnant).
fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn epoch_seconds_read_as_a_date() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_text(1_796_203_847), "2026-12-02 09:30:47 UTC");
        assert_eq!(super::utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
