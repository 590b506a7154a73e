//! The vectors of a graph: the exact f32 rows (for the final ranking and exact scans) and their codes (for
//! the walk), in the order of the graph's node ids.

use std::path::Path;

use super::header::HEADER_LEN;
use crate::kernels::Quantizer;
use crate::IndexError;

/// The vectors: the exact f32 rows and their codes. Rows of a reloaded graph are read from the dumped file into memory;
/// rows added since live in memory after them.
pub(super) struct VectorStore {
    dim: usize,
    code_len: usize,
    loaded: Option<LoadedVectors>,
    /// f32 rows after the loaded ones.
    tail: Vec<f32>,
    /// Their codes, in u64 words so that every code starts aligned for its element type.
    tail_codes: Vec<u64>,
    tail_rows: usize,
}

/// A dumped vectors file, read into memory (8-byte words, so that every f32 row is aligned). Not a memory
/// map: a map turns a file truncated or rewritten under a serving process (`cp` over the folder, a full disk)
/// into SIGBUS at the next search, while a copy keeps answering from what was committed. The cost is one
/// sequential read at open and the rows' size as memory of the process's own (a map's pages were page cache
/// the kernel could reclaim); while a server opens a new commit beside the one it serves, both copies are held.
pub(super) struct LoadedVectors {
    words: Vec<u64>,
    len: usize,
    rows: usize,
}

impl LoadedVectors {
    pub fn read(path: &Path) -> Result<Self, IndexError> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(IndexError::io(path))?;
        let len = file.metadata().map_err(IndexError::io(path))?.len() as usize;
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: the words own at least `len` bytes, and every byte pattern is a valid u64.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        file.read_exact(bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                IndexError::corrupt(
                    path,
                    "shorter than when it was opened (changed while being read)",
                )
            } else {
                IndexError::io(path)(e)
            }
        })?;
        Ok(Self {
            words,
            len,
            rows: 0,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

impl VectorStore {
    pub fn new(dim: usize, code_len: usize) -> Self {
        Self {
            dim,
            code_len,
            loaded: None,
            tail: Vec::new(),
            tail_codes: Vec::new(),
            tail_rows: 0,
        }
    }

    #[cfg(any(test, feature = "bench"))]
    pub fn code_len(&self) -> usize {
        self.code_len
    }

    /// Puts the first `rows` rows of a dumped vectors file (checked against its graph) under this store.
    pub fn attach(&mut self, mut loaded: LoadedVectors, rows: usize) {
        debug_assert_eq!(self.len(), 0, "loaded rows come first");
        loaded.rows = rows;
        self.loaded = Some(loaded);
    }

    fn loaded_rows(&self) -> usize {
        self.loaded.as_ref().map_or(0, |m| m.rows)
    }

    pub fn len(&self) -> usize {
        self.loaded_rows() + self.tail_rows
    }

    #[inline]
    pub fn vector(&self, id: usize) -> &[f32] {
        let base = self.loaded_rows();
        if id < base {
            let m = self.loaded.as_ref().expect("loaded rows");
            let at = HEADER_LEN + id * self.dim * 4;
            let bytes = &m.bytes()[at..at + self.dim * 4];
            // SAFETY: the buffer is 8-byte aligned and `at` a multiple of 4; f32 accepts every bit pattern.
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), self.dim) }
        } else {
            let i = id - base;
            &self.tail[i * self.dim..(i + 1) * self.dim]
        }
    }

    #[inline]
    pub fn code(&self, id: usize) -> &[u8] {
        let base = self.loaded_rows();
        if id < base {
            let m = self.loaded.as_ref().expect("loaded rows");
            let at = HEADER_LEN + m.rows * self.dim * 4 + id * self.code_len;
            &m.bytes()[at..at + self.code_len]
        } else {
            let at = (id - base) * self.code_len;
            // SAFETY: `tail_codes` holds at least `tail_rows · code_len` initialised bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    self.tail_codes.as_ptr().cast::<u8>(),
                    self.tail_rows * self.code_len,
                )
            };
            &bytes[at..at + self.code_len]
        }
    }

    pub fn push(&mut self, v: &[f32], quantizer: &Quantizer) {
        self.tail.extend_from_slice(v);
        let end = (self.tail_rows + 1) * self.code_len;
        self.tail_codes.resize(end.div_ceil(8), 0);
        // SAFETY: just resized to hold `end` bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.tail_codes.as_mut_ptr().cast::<u8>(), end)
        };
        quantizer.encode(v, &mut bytes[end - self.code_len..]);
        self.tail_rows += 1;
    }

    pub fn reserve(&mut self, rows: usize) {
        self.tail.reserve(rows * self.dim);
        self.tail_codes
            .reserve(((self.tail_rows + rows) * self.code_len).div_ceil(8));
    }
}
