use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("invalid region record {key}: {message}")]
    InvalidRecord { key: String, message: String },
    #[error("no index at {0} (it has no manifest.json); build one with `regionseek index`")]
    NotFound(PathBuf),
    #[error("an index already exists at {0}")]
    Exists(PathBuf),
    #[error("{0}")]
    Engine(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
        let path = path.into();
        move |source| IndexError::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> IndexError {
        IndexError::Corrupt {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
