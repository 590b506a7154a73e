//! Keeping an index equal to its input as the input changes (issue 33): before a run embeds anything, the
//! rows of photos that vanished are deleted, those of edited photos (same path, new content) replaced, those
//! of moved or renamed photos (same content, new path) carried over to the new path without embedding again,
//! and, where the input names the regions (`--coco`, `--boxes`, `--masks`), regions it no longer lists
//! dropped. New photos are then embedded by the run as always. The input is the truth, as a fresh index of it
//! would be.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::index::{IndexWriter, RegionRecord};
use crate::pipeline::inputs::ImageInput;

use super::file_hash;

/// What a run may delete of what its input no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Delete the rows of photos the input no longer lists. Off for `--no-delete` (a removable drive that is
    /// not plugged in) and for a run that sees only part of its input (`--limit`).
    pub delete_vanished: bool,
    /// The input names each photo's regions: rows of regions it no longer lists go. Off where the pipeline
    /// finds the regions itself.
    pub input_names_regions: bool,
}

/// What a sync changed, per photo (as indexed) and per region row.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Photos whose path now holds other content: their old rows were deleted (the run embeds the new one).
    pub edited_photos: usize,
    /// Photos found under another path: their rows carried over, not embedded again.
    pub moved_photos: usize,
    /// Photos the input no longer holds: their rows deleted.
    pub deleted_photos: usize,
    /// Photos the input no longer holds whose rows were kept (`--no-delete`, or a `--limit` run).
    pub kept_vanished_photos: usize,
    /// Rows deleted in all (edited, moved from, vanished, regions the input no longer lists).
    pub rows_deleted: usize,
    /// Rows written again under a moved photo's new path.
    pub rows_moved: usize,
    /// Regions the input no longer lists for a photo it still holds.
    pub regions_dropped: usize,
}

/// Brings the index in line with `images` (see the module's comment). Photos that cannot be read are left as
/// they are: the run reports them.
pub fn sync_with_input(
    index: &mut IndexWriter,
    images: &[ImageInput],
    policy: SyncPolicy,
) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport::default();
    if index.live_rows() == 0 {
        return Ok(report);
    }
    let current = content_hashes(images);
    let plan = SyncPlan::of(index, images, &current, policy, &mut report);
    if plan.delete.is_empty() && plan.carry.is_empty() {
        return Ok(report);
    }
    // Deleted first, then written again under the new path: a crash between the two leaves a moved photo
    // without rows, which the next run embeds again; never two live copies of a region.
    index.delete_rows(&plan.delete)?;
    report.rows_deleted = plan.delete.len();
    report.rows_moved = plan.carry.len();
    if !plan.carry.is_empty() {
        index.append(plan.carry)?;
    }
    Ok(report)
}

/// Each readable photo's content hash, by its name in the input.
fn content_hashes(images: &[ImageInput]) -> HashMap<String, String> {
    images
        .par_iter()
        .filter_map(|i| file_hash(&i.path).ok().map(|h| (i.name.clone(), h)))
        .collect()
}

struct SyncPlan {
    delete: Vec<u64>,
    carry: Vec<RegionRecord>,
}

impl SyncPlan {
    fn of(
        index: &IndexWriter,
        images: &[ImageInput],
        current: &HashMap<String, String>,
        policy: SyncPolicy,
        report: &mut SyncReport,
    ) -> Self {
        let rows = index.rows();
        // Live rows per (photo as indexed, content).
        let mut indexed: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (id, row) in rows.iter().enumerate() {
            if !index.is_deleted(id) {
                indexed
                    .entry((row.image.as_str(), row.image_hash.as_str()))
                    .or_default()
                    .push(id);
            }
        }
        // Content that keeps rows under a path that still holds it needs no carrying over.
        let mut served: HashSet<&str> = indexed
            .keys()
            .filter(|(name, hash)| current.get(*name).map(String::as_str) == Some(*hash))
            .map(|(_, hash)| *hash)
            .collect();
        let mut names_by_hash: HashMap<&str, Vec<&str>> = HashMap::new();
        for image in images {
            if let Some(h) = current.get(&image.name) {
                names_by_hash
                    .entry(h.as_str())
                    .or_default()
                    .push(&image.name);
            }
        }
        let listed: HashSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let mut plan = SyncPlan {
            delete: Vec::new(),
            carry: Vec::new(),
        };
        let mut stale: Vec<(&(&str, &str), &Vec<usize>)> = indexed
            .iter()
            .filter(|((name, hash), _)| current.get(*name).map(String::as_str) != Some(*hash))
            .collect();
        // The same order every run, so that which copy a moved photo's rows go to does not vary.
        stale.sort_by_key(|(key, _)| *key);
        for ((name, hash), ids) in stale {
            let unreadable = listed.contains(name) && !current.contains_key(*name);
            if unreadable {
                continue; // the run names the failure; its rows stay until the photo is readable again
            }
            let new_home = names_by_hash
                .get(hash)
                .and_then(|names| names.first())
                .filter(|_| !served.contains(hash));
            if let Some(new_name) = new_home {
                served.insert(hash);
                report.moved_photos += 1;
                plan.carry.extend(ids.iter().filter_map(|&id| {
                    let mut meta = rows[id].clone();
                    meta.image = new_name.to_string();
                    index
                        .embedding(id)
                        .map(|embedding| RegionRecord { meta, embedding })
                }));
                plan.delete.extend(ids.iter().map(|&id| id as u64));
            } else if current.contains_key(*name) {
                report.edited_photos += 1;
                plan.delete.extend(ids.iter().map(|&id| id as u64));
            } else if policy.delete_vanished {
                report.deleted_photos += 1;
                plan.delete.extend(ids.iter().map(|&id| id as u64));
            } else {
                report.kept_vanished_photos += 1;
            }
        }
        if policy.input_names_regions {
            for image in images {
                let Some(hash) = current.get(&image.name) else {
                    continue;
                };
                let Some(ids) = indexed.get(&(image.name.as_str(), hash.as_str())) else {
                    continue;
                };
                let wanted: HashSet<&str> = image.regions.iter().map(|r| r.id.as_str()).collect();
                for &id in ids {
                    if !wanted.contains(rows[id].region_id.as_str()) {
                        report.regions_dropped += 1;
                        plan.delete.push(id as u64);
                    }
                }
            }
        }
        plan
    }
}
