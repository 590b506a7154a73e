//! Who links to whom, level by level (see the module documentation of `graph` for the layout).

use std::sync::atomic::{AtomicU32, Ordering as Mem};

/// The highest level a node can get: levels are drawn with probability 1/M per level, so 15 is never reached
/// in practice, and a level byte from a file beyond it is damage.
pub(super) const MAX_LEVEL: u8 = 15;
/// `upper_at` of a node that has no level above 0.
pub(super) const NO_UPPER: u64 = u64::MAX;

/// One word of a link list: an atomic while threads link nodes in parallel, a plain `u32` once frozen.
pub(super) trait Slot {
    /// A list's count. Acquire: a writer stores the ids before it publishes the count that covers them.
    fn count(&self) -> u32;
    /// An id of a list, read after its count.
    fn id(&self) -> u32;
}

impl Slot for u32 {
    #[inline]
    fn count(&self) -> u32 {
        *self
    }
    #[inline]
    fn id(&self) -> u32 {
        *self
    }
}

impl Slot for AtomicU32 {
    #[inline]
    fn count(&self) -> u32 {
        self.load(Mem::Acquire)
    }
    #[inline]
    fn id(&self) -> u32 {
        self.load(Mem::Relaxed)
    }
}

pub(super) struct Links<S> {
    /// Links per node above level 0; level 0 has twice as many.
    pub m: usize,
    pub levels: Vec<u8>,
    pub upper_at: Vec<u64>,
    pub level0: Vec<S>,
    pub upper: Vec<S>,
}

impl<S> Links<S> {
    pub fn new(m: usize) -> Self {
        Self {
            m,
            levels: Vec::new(),
            upper_at: Vec::new(),
            level0: Vec::new(),
            upper: Vec::new(),
        }
    }

    pub fn nodes(&self) -> usize {
        self.levels.len()
    }

    /// Words of a level-0 block: the count, then 2M ids.
    pub fn level0_width(&self) -> usize {
        1 + 2 * self.m
    }

    /// Words of an upper-level block: the count, then M ids.
    pub fn upper_width(&self) -> usize {
        1 + self.m
    }

    /// The (count, ids) slots of `id`'s links at `level`.
    #[inline]
    pub fn block(&self, id: usize, level: u8) -> (&S, &[S]) {
        let block = if level == 0 {
            let w = self.level0_width();
            &self.level0[id * w..(id + 1) * w]
        } else {
            let w = self.upper_width();
            let at = self.upper_at[id] as usize + (level as usize - 1) * w;
            &self.upper[at..at + w]
        };
        (&block[0], &block[1..])
    }

    #[cfg(any(test, feature = "bench"))]
    /// What the links take in memory, levels and block offsets included.
    pub fn bytes(&self) -> usize {
        (self.level0.len() + self.upper.len()) * 4 + self.upper_at.len() * 8 + self.levels.len()
    }

    /// The same links in another kind of slot.
    pub fn map<T>(self, slot: impl Fn(S) -> T) -> Links<T> {
        Links {
            m: self.m,
            levels: self.levels,
            upper_at: self.upper_at,
            level0: self.level0.into_iter().map(&slot).collect(),
            upper: self.upper.into_iter().map(&slot).collect(),
        }
    }
}

impl<S: Slot> Links<S> {
    /// The ids `id` links to at `level`.
    #[inline]
    pub fn neighbours(&self, id: u32, level: u8) -> impl Iterator<Item = u32> + '_ {
        let (count, slots) = self.block(id as usize, level);
        let n = (count.count() as usize).min(slots.len());
        slots[..n].iter().map(S::id)
    }
}

impl Links<AtomicU32> {
    /// Adds a node of `level` with empty link blocks.
    pub fn push_node(&mut self, level: u8) {
        self.levels.push(level);
        if level > 0 {
            self.upper_at.push(self.upper.len() as u64);
            let words = level as usize * self.upper_width();
            self.upper.extend((0..words).map(|_| AtomicU32::new(0)));
        } else {
            self.upper_at.push(NO_UPPER);
        }
        let words = self.level0_width();
        self.level0.extend((0..words).map(|_| AtomicU32::new(0)));
    }
}

impl Links<u32> {
    /// Whether links read from a file can be trusted: every block inside the arrays, every id a node, and
    /// every link at level l to a node that has level l (a walk follows it into that node's level-l block).
    /// Searching indexes the arrays with these numbers unchecked. Says what is wrong otherwise.
    pub fn check(&self) -> Result<(), &'static str> {
        let n = self.nodes();
        let w = self.upper_width();
        for id in 0..n {
            let level = self.levels[id];
            if level > MAX_LEVEL {
                return Err("a node level out of range");
            }
            let blocks = if level == 0 {
                if self.upper_at[id] != NO_UPPER {
                    return Err("a level-0 node with upper links");
                }
                0
            } else {
                let end = (self.upper_at[id] as usize).checked_add(level as usize * w);
                if end.is_none_or(|e| e > self.upper.len()) {
                    return Err("upper links out of range");
                }
                level
            };
            for l in 0..=blocks {
                let (&count, slots) = self.block(id, l);
                let c = count as usize;
                if c > slots.len() || slots[..c].iter().any(|&s| s as usize >= n) {
                    return Err("a link to a node that does not exist");
                }
                if slots[..c].iter().any(|&s| self.levels[s as usize] < l) {
                    return Err("a link to a node below its level");
                }
            }
        }
        Ok(())
    }
}
