//! A photo's name as the index stores it, and where that photo may be read. Names come from files a user
//! (or anyone who hands them a COCO file) wrote, so they are checked twice: where they enter (relative, no
//! `..`, not absolute) and again where a photo is read (canonicalised, which resolves symlinks, and required
//! to lie under the images folder). Without the second check an index written by an older version, or a
//! symlink placed in the folder later, would still let a reader reach any file on the machine.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoPathError {
    #[error("the photo name is empty")]
    Empty,
    #[error("the photo name {0:?} is absolute; names are relative to the images folder")]
    Absolute(String),
    #[error(
        "the photo name {0:?} climbs out of the images folder (`..`); names are relative to it"
    )]
    ClimbsOut(String),
    #[error("the photo name {0:?} holds a NUL byte")]
    Nul(String),
    #[error("the photo {0:?} is not in the images folder")]
    Missing(String),
    #[error("the photo {0:?} leads outside the images folder (a symlink); it is not read")]
    LeavesRoot(String),
    #[error("the photo {0:?} is not a file")]
    NotAFile(String),
    #[error("the images folder cannot be opened: {0}")]
    Root(String),
}

/// Whether a name can stand for a photo under an images folder: relative, without `..` or a drive or root
/// component. `./` components are allowed (they change nothing).
pub fn check_photo_name(name: &str) -> Result<(), PhotoPathError> {
    if name.is_empty() {
        return Err(PhotoPathError::Empty);
    }
    if name.contains('\0') {
        return Err(PhotoPathError::Nul(name.to_string()));
    }
    // A leading backslash or a drive letter is absolute on Windows even where Path does not say so.
    let drive =
        name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic();
    if name.starts_with('/') || name.starts_with('\\') || drive {
        return Err(PhotoPathError::Absolute(name.to_string()));
    }
    for c in Path::new(name).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(PhotoPathError::ClimbsOut(name.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PhotoPathError::Absolute(name.to_string()))
            }
        }
    }
    // `a\..\b` is one component on Unix but climbs out on Windows; refuse it everywhere.
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err(PhotoPathError::ClimbsOut(name.to_string()));
    }
    Ok(())
}

/// The file a photo name stands for under `root`, after following every symlink; refused unless it is a
/// file inside `root`.
pub fn resolve_photo(root: &Path, name: &str) -> Result<PathBuf, PhotoPathError> {
    resolve_under_canonical(&canonical_root(root)?, name)
}

fn canonical_root(root: &Path) -> Result<PathBuf, PhotoPathError> {
    root.canonicalize()
        .map_err(|e| PhotoPathError::Root(e.kind().to_string()))
}

/// The photo a name stands for under `root`, opened: [`resolve_photo`], then the opened file itself checked,
/// so that a folder on the way swapped for a symlink between the check and the open (a race a local user can
/// win) still cannot make a reader return a file from elsewhere. Opened without blocking, so that a FIFO put
/// in its place cannot hang the reader; only a regular file is returned.
pub fn open_photo(root: &Path, name: &str) -> Result<std::fs::File, PhotoPathError> {
    let root = canonical_root(root)?;
    let path = resolve_under_canonical(&root, name)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(&path)
        .map_err(|_| PhotoPathError::Missing(name.to_string()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(PhotoPathError::NotAFile(name.to_string()));
    }
    if !opened_under(&file, &path, &root) {
        return Err(PhotoPathError::LeavesRoot(name.to_string()));
    }
    Ok(file)
}

/// Whether an opened file lies under `root`: by the kernel's own record of what was opened where there is one
/// (Linux), else by the path resolved again and compared with the open file's identity.
fn opened_under(file: &std::fs::File, path: &Path, root: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return real.starts_with(root);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let again = path.canonicalize();
        let (Ok(opened), Ok(again)) = (file.metadata(), again) else {
            return false;
        };
        let Ok(now) = again.metadata() else {
            return false;
        };
        again.starts_with(root) && (opened.dev(), opened.ino()) == (now.dev(), now.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.canonicalize().is_ok_and(|p| p.starts_with(root))
    }
}

/// [`resolve_photo`] for a root already canonicalised (a folder walk resolves many names under one root).
pub fn resolve_under_canonical(root: &Path, name: &str) -> Result<PathBuf, PhotoPathError> {
    check_photo_name(name)?;
    let path = root.join(name).canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PhotoPathError::Missing(name.to_string())
        } else {
            PhotoPathError::NotAFile(name.to_string())
        }
    })?;
    if !path.starts_with(root) {
        return Err(PhotoPathError::LeavesRoot(name.to_string()));
    }
    if !path.is_file() {
        return Err(PhotoPathError::NotAFile(name.to_string()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in [
            "/etc/passwd",
            "../secret/x.jpg",
            "a/../../x.jpg",
            "a\\..\\x.jpg",
            "C:x.jpg",
            "\\x",
        ] {
            assert!(check_photo_name(bad).is_err(), "{bad} should be refused");
        }
        for good in ["a.jpg", "sub/b.jpg", "./c.jpg", "a..b.jpg", "..hidden.jpg"] {
            assert_eq!(check_photo_name(good), Ok(()), "{good} should be accepted");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_folder_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        let outside = dir.path().join("secret.jpg");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(&outside, b"x").unwrap();
        std::fs::write(root.join("in.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link.jpg")).unwrap();
        std::os::unix::fs::symlink(root.join("in.jpg"), root.join("inner-link.jpg")).unwrap();
        assert!(resolve_photo(&root, "in.jpg").is_ok());
        assert!(resolve_photo(&root, "inner-link.jpg").is_ok());
        assert_eq!(
            resolve_photo(&root, "link.jpg"),
            Err(PhotoPathError::LeavesRoot("link.jpg".into()))
        );
        assert_eq!(
            resolve_photo(&root, "gone.jpg"),
            Err(PhotoPathError::Missing("gone.jpg".into()))
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_opened_photo_is_checked_for_where_it_really_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let outside = dir.path().join("elsewhere.jpg");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::write(root.join("in.jpg"), b"x").unwrap();
        assert!(open_photo(&root, "in.jpg").is_ok());
        // What a swap between the check and the open would leave: a handle on a file outside the root.
        let opened = std::fs::File::open(&outside).unwrap();
        assert!(!opened_under(&opened, &root.join("in.jpg"), &root));
        // A FIFO is refused, without waiting for a writer.
        let fifo = root.join("pipe.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            open_photo(&root, "pipe.jpg").unwrap_err(),
            PhotoPathError::NotAFile("pipe.jpg".into())
        );
    }
}
