//! Deleted rows: one bit per row, in a file of its own named by the generation that committed it (see
//! `files::tombstones`), its size and CRC in the manifest. A bitset rather than a list because its size is
//! bounded by the row count (125 kB at a million rows) however many rows are deleted, and a commit rewrites
//! it whole, so the manifest itself stays small.
//!
//! File layout: the magic `RSTOMB01`, the number of rows covered (u64, little-endian), then
//! ceil(covers / 8) bytes, row `r` being bit `r % 8` of byte `r / 8`. Bits past `covers` are zero.

use std::path::Path;

use crate::files;
use crate::manifest::{checksum, verify, FileEntry, TombstonesEntry};
use crate::IndexError;

const MAGIC: &[u8; 8] = b"RSTOMB01";
const HEADER: usize = 16;

/// Which rows are deleted, in memory. Rows past the bitset's end are live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tombstones {
    bits: Vec<u8>,
    dead: usize,
}

impl Tombstones {
    pub(crate) fn is_dead(&self, row: usize) -> bool {
        self.bits
            .get(row / 8)
            .is_some_and(|b| b & (1 << (row % 8)) != 0)
    }

    /// Marks `row` deleted; false if it already was.
    pub(crate) fn mark(&mut self, row: usize) -> bool {
        if self.is_dead(row) {
            return false;
        }
        if self.bits.len() <= row / 8 {
            self.bits.resize(row / 8 + 1, 0);
        }
        self.bits[row / 8] |= 1 << (row % 8);
        self.dead += 1;
        true
    }

    /// How many rows are deleted.
    pub(crate) fn count(&self) -> usize {
        self.dead
    }

    /// The file's bytes for a table of `covers` rows.
    fn encode(&self, covers: u64) -> Vec<u8> {
        let len = (covers as usize).div_ceil(8);
        let mut out = Vec::with_capacity(HEADER + len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&covers.to_le_bytes());
        out.extend_from_slice(&self.bits[..self.bits.len().min(len)]);
        out.resize(HEADER + len, 0);
        out
    }

    fn decode(path: &Path, bytes: &[u8], entry: &TombstonesEntry) -> Result<Self, IndexError> {
        let bad = |m: String| IndexError::corrupt(path, m);
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a tombstones file".into()));
        }
        let mut covers = [0u8; 8];
        covers.copy_from_slice(&bytes[8..HEADER]);
        let covers = u64::from_le_bytes(covers);
        if covers != entry.covers {
            return Err(bad(format!(
                "covers {covers} rows, the manifest says {}",
                entry.covers
            )));
        }
        let bits = &bytes[HEADER..];
        if bits.len() as u64 != covers.div_ceil(8) {
            return Err(bad(format!(
                "{} bytes of bits for {covers} rows",
                bits.len()
            )));
        }
        let tail = covers % 8;
        if tail != 0 && bits.last().is_some_and(|b| b >> tail != 0) {
            return Err(bad("rows past the end are marked".into()));
        }
        let dead: usize = bits.iter().map(|b| b.count_ones() as usize).sum();
        if dead as u64 != entry.file.rows {
            return Err(bad(format!(
                "marks {dead} rows deleted, the manifest says {}",
                entry.file.rows
            )));
        }
        Ok(Self {
            bits: bits.to_vec(),
            dead,
        })
    }

    /// Reads and checks (CRC, size, count) the file a manifest names.
    pub(crate) fn read(dir: &Path, entry: &TombstonesEntry) -> Result<Self, IndexError> {
        verify(dir, &entry.file)?;
        let path = dir.join(&entry.file.file);
        let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
        Self::decode(&path, &bytes, entry)
    }

    /// The state of a manifest: none without an entry.
    pub(crate) fn of(dir: &Path, entry: Option<&TombstonesEntry>) -> Result<Self, IndexError> {
        entry.map_or_else(|| Ok(Self::default()), |e| Self::read(dir, e))
    }

    /// Writes the file of generation `generation` for a table of `covers` rows (synced, renamed into place)
    /// and describes it for the manifest, which does not name it yet.
    pub(crate) fn write(
        &self,
        dir: &Path,
        generation: u64,
        covers: u64,
    ) -> Result<TombstonesEntry, IndexError> {
        let file = files::tombstones(generation);
        let path = dir.join(&file);
        crate::manifest::write_atomic(&path, &self.encode(covers))?;
        let (bytes, crc32) = checksum(&path)?;
        Ok(TombstonesEntry {
            covers,
            file: FileEntry {
                file,
                rows: self.dead as u64,
                bytes,
                crc32,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitset_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::default();
        assert!(t.mark(3) && t.mark(17) && !t.mark(3));
        assert_eq!(t.count(), 2);
        assert!(t.is_dead(17) && !t.is_dead(16) && !t.is_dead(1_000));
        let entry = t.write(dir.path(), 4, 20).unwrap();
        assert_eq!((entry.covers, entry.file.rows), (20, 2));
        assert_eq!(Tombstones::read(dir.path(), &entry).unwrap(), t);
        let path = dir.path().join(&entry.file.file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Tombstones::read(dir.path(), &entry),
            Err(IndexError::Corrupt { .. })
        ));
        let mut wrong = entry.clone();
        wrong.file.crc32 = crc32fast::hash(&bytes);
        assert!(Tombstones::decode(&path, &bytes, &wrong)
            .unwrap_err()
            .to_string()
            .contains("manifest says 2"));
    }
}
