//! The named models of `weights/manifest.json` and their download from the hub.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::weights::WeightsError;

const MANIFEST: &str = include_str!("../../weights/manifest.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub arch: String,
    pub layout: String,
    pub repo: String,
    pub files: Vec<String>,
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    models: Vec<ManifestEntry>,
}

pub fn entries() -> Vec<ManifestEntry> {
    serde_json::from_str::<Manifest>(MANIFEST)
        .map(|m| m.models)
        .unwrap_or_default()
}

pub fn find(name: &str) -> Option<ManifestEntry> {
    entries()
        .into_iter()
        .find(|e| e.name == name || e.repo == name)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// Downloads a manifest model into `dir` through hf-hub's cache; returns the files written.
pub fn fetch(entry: &ManifestEntry, dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let offline = |message: String| WeightsError::Offline {
        name: entry.name.clone(),
        dir: dir.to_path_buf(),
        message,
    };
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_progress(true)
        .build()
        .map_err(|e| offline(e.to_string()))?;
    let repo = api.model(entry.repo.clone());
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::Io {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut written = Vec::new();
    let mut sums = String::new();
    for file in &entry.files {
        let cached = repo
            .get(file)
            .map_err(|e| offline(format!("{file}: {e}")))?;
        let target = dir.join(file);
        let tmp = dir.join(format!(".{file}.part"));
        std::fs::copy(&cached, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &target))
            .map_err(|e| WeightsError::Io {
                path: target.clone(),
                message: e.to_string(),
            })?;
        let sum = sha256_file(&target).map_err(|e| WeightsError::Io {
            path: target.clone(),
            message: e.to_string(),
        })?;
        sums.push_str(&format!("{sum}  {file}\n"));
        written.push(target);
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).map_err(|e| WeightsError::Io {
        path: dir.join("SHA256SUMS"),
        message: e.to_string(),
    })?;
    Ok(written)
}
