//! The identity of a model's weights recorded in the index: the id for built-in random models, a digest of
//! the tensor files for real ones (hashed once, then cached beside them).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The per-file digests of a weights folder, kept beside the weights so that opening a model does not
/// hash gigabytes each time; an entry is reused only while its file's size and modification time match.
pub const FINGERPRINT_CACHE: &str = ".regionseek-fingerprint.json";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FileDigest {
    name: String,
    bytes: u64,
    modified_ns: u128,
    sha256: String,
}

fn file_stamp(path: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(path).ok()?;
    let modified = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((m.len(), modified.as_nanos()))
}

/// What identifies a model's weights in an index manifest: a digest over the sha256 of every
/// `.safetensors` file of its folder (the id itself for built-in random models).
pub fn weights_fingerprint(dir: Option<&Path>, id: &str) -> String {
    let Some(dir) = dir else {
        return id.to_string();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files.sort();
    let cache_path = dir.join(FINGERPRINT_CACHE);
    let cached: Vec<FileDigest> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut digests = Vec::with_capacity(files.len());
    let mut h = Sha256::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = file_stamp(f);
        let reuse = stamp.and_then(|(bytes, modified_ns)| {
            cached
                .iter()
                .find(|c| c.name == name && c.bytes == bytes && c.modified_ns == modified_ns)
        });
        let sha = match reuse {
            Some(c) => Some(c.sha256.clone()),
            None => {
                tracing::info!(
                    "hashing {} (once; the digest is kept in {FINGERPRINT_CACHE})",
                    f.display()
                );
                crate::clip::manifest::sha256_file(f).ok()
            }
        };
        match (sha, stamp) {
            (Some(sha), Some((bytes, modified_ns))) => {
                h.update(sha.as_bytes());
                digests.push(FileDigest {
                    name,
                    bytes,
                    modified_ns,
                    sha256: sha,
                });
            }
            (Some(sha), None) => h.update(sha.as_bytes()),
            (None, _) => h.update(f.display().to_string().as_bytes()),
        }
    }
    if digests != cached {
        // A read-only weights folder only costs the hashing again next time.
        if let Err(e) = serde_json::to_vec_pretty(&digests)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::pipeline::write_atomic(&cache_path, &b))
        {
            tracing::debug!("not caching the weights digests: {e}");
        }
    }
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    #[test]
    fn weights_are_hashed_once_and_again_only_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, b"first weights").unwrap();
        let expect = |content: &[u8]| {
            let mut h = Sha256::new();
            h.update(sha_hex(content).as_bytes());
            format!("{:x}", h.finalize())
        };
        let first = weights_fingerprint(Some(dir.path()), "x");
        assert_eq!(first, expect(b"first weights"));
        let cache_path = dir.path().join(FINGERPRINT_CACHE);
        let cached: Vec<FileDigest> =
            serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].sha256, sha_hex(b"first weights"));

        // The cached digest is what is used while the file's size and time match: a planted digest
        // shows through, proving the file was not read again.
        let mut planted = cached.clone();
        planted[0].sha256 = sha_hex(b"planted");
        std::fs::write(&cache_path, serde_json::to_vec(&planted).unwrap()).unwrap();
        assert_eq!(
            weights_fingerprint(Some(dir.path()), "x"),
            expect(b"planted")
        );

        // A changed file is hashed again.
        std::fs::write(&weights, b"second, longer weights").unwrap();
        assert_eq!(
            weights_fingerprint(Some(dir.path()), "x"),
            expect(b"second, longer weights")
        );
        // Built-in models are their id.
        assert_eq!(
            weights_fingerprint(None, "random:vit-b-32"),
            "random:vit-b-32"
        );
    }
}
