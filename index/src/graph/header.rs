//! The 64 bytes that open each file of a graph dump, as structs laid over the bytes (`zerocopy`).
//!
//! The fields are zerocopy's little-endian integer and float types, whose alignment is 1: the links header
//! has its f32 scale at byte 54, which no native `repr(C)` layout allows, and the bytes must stay exactly
//! those that dumps already on disk hold. With alignment 1 the structs have no padding, so `repr(C)` lays
//! them out field after field, which the size assertions below and the tests pin to the old layout.

use zerocopy::byteorder::little_endian::{F32, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Both headers' length; the data after them starts 8-byte aligned.
pub(super) const HEADER_LEN: usize = 64;

const LINKS_MAGIC: [u8; 8] = *b"RSHNSWL1";
const VECTORS_MAGIC: [u8; 8] = *b"RSHNSWV1";

/// Opens `{basename}.links`. Levels, block offsets and link words follow (see `file`).
#[derive(
    Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub(super) struct LinksHeader {
    pub magic: [u8; 8],
    pub dim: U64,
    pub m: U64,
    pub ef_construction: U64,
    pub nodes: U64,
    /// Words in the upper-level link blocks.
    pub upper_words: U64,
    /// The entry node (`u32::MAX` in an empty graph) and its level.
    pub entry: U32,
    pub top_level: u8,
    /// `Codec::id`.
    pub codec: u8,
    /// The quantizer's scale (see `Quantizer`).
    pub scale: F32,
    pub reserved: [u8; 6],
}

/// Opens `{basename}.vectors`. The f32 rows follow, then their codes.
#[derive(
    Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub(super) struct VectorsHeader {
    pub magic: [u8; 8],
    pub dim: U64,
    pub rows: U64,
    /// `Codec::id`.
    pub codec: u8,
    pub reserved: [u8; 39],
}

const _: () = assert!(std::mem::size_of::<LinksHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::size_of::<VectorsHeader>() == HEADER_LEN);

/// What a links header records, in the types the graph uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LinksFields {
    pub dim: u64,
    pub m: u64,
    pub ef_construction: u64,
    pub nodes: u64,
    pub upper_words: u64,
    pub entry: u32,
    pub top_level: u8,
    pub codec: u8,
    pub scale: f32,
}

impl LinksHeader {
    pub fn new(f: LinksFields) -> Self {
        Self {
            magic: LINKS_MAGIC,
            dim: f.dim.into(),
            m: f.m.into(),
            ef_construction: f.ef_construction.into(),
            nodes: f.nodes.into(),
            upper_words: f.upper_words.into(),
            entry: f.entry.into(),
            top_level: f.top_level,
            codec: f.codec,
            scale: f.scale.into(),
            reserved: [0; 6],
        }
    }

    /// The header at the start of `bytes`, if they are long enough and carry the links magic.
    pub fn read(bytes: &[u8]) -> Option<LinksFields> {
        let (h, _) = Self::read_from_prefix(bytes).ok()?;
        (h.magic == LINKS_MAGIC).then(|| LinksFields {
            dim: h.dim.get(),
            m: h.m.get(),
            ef_construction: h.ef_construction.get(),
            nodes: h.nodes.get(),
            upper_words: h.upper_words.get(),
            entry: h.entry.get(),
            top_level: h.top_level,
            codec: h.codec,
            scale: h.scale.get(),
        })
    }
}

impl VectorsHeader {
    pub fn new(dim: u64, rows: u64, codec: u8) -> Self {
        Self {
            magic: VECTORS_MAGIC,
            dim: dim.into(),
            rows: rows.into(),
            codec,
            reserved: [0; 39],
        }
    }

    /// Whether `bytes` start with the header [`Self::new`] makes of these values.
    pub fn matches(bytes: &[u8], dim: u64, rows: u64, codec: u8) -> bool {
        Self::read_from_prefix(bytes).is_ok_and(|(h, _)| {
            h.magic == VECTORS_MAGIC
                && h.dim.get() == dim
                && h.rows.get() == rows
                && h.codec == codec
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> LinksFields {
        LinksFields {
            dim: 512,
            m: 16,
            ef_construction: 100,
            nodes: 123_456,
            upper_words: 7_890,
            entry: 4_242,
            top_level: 3,
            codec: 2,
            scale: 211.5,
        }
    }

    /// The links header exactly as the code before these structs wrote it, byte by byte.
    fn written_by_hand(f: &LinksFields) -> Vec<u8> {
        let mut head = Vec::new();
        head.extend_from_slice(b"RSHNSWL1");
        for x in [f.dim, f.m, f.ef_construction, f.nodes, f.upper_words] {
            head.extend_from_slice(&x.to_le_bytes());
        }
        head.extend_from_slice(&f.entry.to_le_bytes());
        head.push(f.top_level);
        head.push(f.codec);
        head.extend_from_slice(&f.scale.to_le_bytes());
        head.resize(64, 0);
        head
    }

    #[test]
    fn a_links_header_reads_back_the_fields_it_was_written_with() {
        let f = fields();
        let header = LinksHeader::new(f);
        assert_eq!(header.as_bytes().len(), HEADER_LEN);
        assert_eq!(LinksHeader::read(header.as_bytes()), Some(f));
        // Followed by data, as in a file.
        let mut file = header.as_bytes().to_vec();
        file.extend_from_slice(&[9; 100]);
        assert_eq!(LinksHeader::read(&file), Some(f));
    }

    #[test]
    fn the_links_header_is_the_layout_existing_dumps_hold() {
        let f = fields();
        let old = written_by_hand(&f);
        assert_eq!(LinksHeader::new(f).as_bytes(), &old[..]);
        assert_eq!(LinksHeader::read(&old), Some(f));
        // The fields at the offsets the old reader took them from.
        assert_eq!(u32::from_le_bytes(old[48..52].try_into().unwrap()), 4_242);
        assert_eq!((old[52], old[53]), (3, 2));
        assert_eq!(f32::from_le_bytes(old[54..58].try_into().unwrap()), 211.5);
    }

    #[test]
    fn a_short_or_foreign_links_header_is_not_read() {
        let old = written_by_hand(&fields());
        assert_eq!(LinksHeader::read(&old[..63]), None);
        let mut foreign = old.clone();
        foreign[..8].copy_from_slice(b"RSHNSWV1");
        assert_eq!(LinksHeader::read(&foreign), None);
    }

    #[test]
    fn the_vectors_header_is_the_layout_existing_dumps_hold() {
        let mut old = Vec::new();
        old.extend_from_slice(b"RSHNSWV1");
        old.extend_from_slice(&512u64.to_le_bytes());
        old.extend_from_slice(&1000u64.to_le_bytes());
        old.push(1);
        old.resize(64, 0);
        assert_eq!(VectorsHeader::new(512, 1000, 1).as_bytes(), &old[..]);
        assert!(VectorsHeader::matches(&old, 512, 1000, 1));
        assert!(!VectorsHeader::matches(&old, 512, 1001, 1));
        assert!(!VectorsHeader::matches(&old, 512, 1000, 2));
        assert!(!VectorsHeader::matches(&old[..40], 512, 1000, 1));
    }
}
