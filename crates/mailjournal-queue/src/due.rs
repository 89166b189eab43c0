//! The set of waiting items ordered by due time: a handful of sorted runs plus an ordered set
//! for the rest.
//!
//! Deadlines arrive nearly sorted: each is an arrival time plus a definition's fixed delay, or
//! `now` plus the attempt interval. So every new entry usually sorts after the last entry of
//! one of a few runs, and appending to a `VecDeque` costs far less than descending a B-tree
//! (and keeps memory sequential however many items wait). Entries that fit no run go to a
//! `BTreeSet`. The smallest entry is the smallest of the runs' fronts and the set's first.
//!
//! Removal from the middle of a run leaves a tombstone found by binary search (runs are
//! sorted); fronts are kept live, so [`DueSet::first`] is always exact. A run that empties
//! keeps its buffer for the next stream, as a `Vec` keeps its capacity.

use std::collections::{BTreeSet, VecDeque};

/// Runs kept at most: enough for the usual few delay streams, few enough that finding the
/// smallest front stays a short scan.
const MAX_RUNS: usize = 8;

/// One entry: its order is the order in which entries come out.
pub(crate) trait Entry: Copy + Ord {}
impl<T: Copy + Ord> Entry for T {}

/// A run: entries in ascending order, some of them removed.
#[derive(Debug, Clone)]
struct Run<T> {
    entries: VecDeque<(T, bool)>,
}

impl<T: Entry> Run<T> {
    fn front(&self) -> Option<T> {
        self.entries.front().map(|&(e, _)| e)
    }

    fn back(&self) -> Option<T> {
        self.entries.back().map(|&(e, _)| e)
    }

    /// Drops removed entries at the front, so the front is live.
    fn trim(&mut self) {
        while self.entries.front().is_some_and(|&(_, live)| !live) {
            self.entries.pop_front();
        }
    }

    /// Where the run holds `entry` live (keys are unique within a run: appends are strictly
    /// greater than the last entry, removed or not).
    fn find(&self, entry: &T) -> Option<usize> {
        let (front, back) = (self.front()?, self.back()?);
        if *entry < front || back < *entry {
            return None;
        }
        let i = self.entries.binary_search_by(|(e, _)| e.cmp(entry)).ok()?;
        self.entries[i].1.then_some(i)
    }
}

/// An ordered set of entries, cheap to fill in nearly sorted order.
#[derive(Debug, Clone)]
pub(crate) struct DueSet<T> {
    runs: Vec<Run<T>>,
    scattered: BTreeSet<T>,
}

impl<T> Default for DueSet<T> {
    fn default() -> Self {
        DueSet {
            runs: Vec::new(),
            scattered: BTreeSet::new(),
        }
    }
}

impl<T: Entry> DueSet<T> {
    /// An empty set whose first run has room for `n` entries.
    pub(crate) fn with_capacity(n: usize) -> Self {
        DueSet {
            runs: vec![Run {
                entries: VecDeque::with_capacity(n),
            }],
            scattered: BTreeSet::new(),
        }
    }

    /// Number of live entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        let in_runs: usize = self
            .runs
            .iter()
            .map(|run| run.entries.iter().filter(|&&(_, live)| live).count())
            .sum();
        in_runs + self.scattered.len()
    }

    /// Adds an entry. Entries are unique: adding one already held is the caller's bug, and
    /// it would come out twice.
    pub(crate) fn insert(&mut self, entry: T) {
        // The run whose last entry is the greatest below this one: appending there keeps the
        // other runs free for the streams that fit them.
        let best = self
            .runs
            .iter_mut()
            .filter(|run| run.back().is_some_and(|back| back < entry))
            .max_by_key(|run| run.back());
        if let Some(run) = best {
            run.entries.push_back((entry, true));
        } else if let Some(run) = self.runs.iter_mut().find(|run| run.entries.is_empty()) {
            run.entries.push_back((entry, true));
        } else if self.runs.len() < MAX_RUNS {
            self.runs.push(Run {
                entries: VecDeque::from([(entry, true)]),
            });
        } else {
            self.scattered.insert(entry);
        }
    }

    /// The smallest entry.
    pub(crate) fn first(&self) -> Option<T> {
        self.smallest().map(|(_, entry)| entry)
    }

    /// Removes and returns the smallest entry if `take` accepts it.
    pub(crate) fn pop_first_if(&mut self, take: impl FnOnce(&T) -> bool) -> Option<T> {
        let (source, first) = self.smallest()?;
        if !take(&first) {
            return None;
        }
        match source {
            Some(r) => {
                let run = &mut self.runs[r];
                run.entries.pop_front();
                run.trim();
            }
            None => {
                self.scattered.pop_first();
            }
        }
        Some(first)
    }

    /// The smallest entry and where it is: the index of its run, or `None` for `scattered`.
    fn smallest(&self) -> Option<(Option<usize>, T)> {
        let in_runs = self
            .runs
            .iter()
            .enumerate()
            .filter_map(|(r, run)| Some((Some(r), run.front()?)));
        in_runs
            .chain(self.scattered.first().map(|&e| (None, e)))
            .min_by_key(|&(_, entry)| entry)
    }

    /// Removes an entry; false when it is not held.
    pub(crate) fn remove(&mut self, entry: &T) -> bool {
        if self.scattered.remove(entry) {
            return true;
        }
        let found = self
            .runs
            .iter()
            .enumerate()
            .find_map(|(r, run)| Some((r, run.find(entry)?)));
        let Some((r, i)) = found else {
            return false;
        };
        let run = &mut self.runs[r];
        run.entries[i].1 = false;
        run.trim();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Pop,
        Remove(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u16>().prop_map(Op::Insert),
            2 => Just(Op::Pop),
            1 => any::<u16>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Behaves exactly as a `BTreeSet`, whatever the order of inserts and removals.
        #[test]
        fn matches_an_ordered_set(ops in proptest::collection::vec(op(), 0..400), sorted in any::<bool>()) {
            let mut set = DueSet::default();
            let mut model = BTreeSet::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        // Nearly sorted streams (several offsets) or arbitrary keys.
                        let key = if sorted { next += 1; next + u32::from(k % 4) * 1000 } else { u32::from(k) };
                        if model.insert(key) {
                            set.insert(key);
                        }
                    }
                    Op::Pop => prop_assert_eq!(set.pop_first_if(|_| true), model.pop_first()),
                    Op::Remove(k) => {
                        let key = u32::from(k) % (next.max(1) + 4000);
                        prop_assert_eq!(set.remove(&key), model.remove(&key));
                    }
                }
                prop_assert_eq!(set.first(), model.first().copied());
                prop_assert_eq!(set.len(), model.len());
            }
        }
    }

    #[test]
    fn interleaved_delay_streams_stay_in_runs() {
        let mut set = DueSet::default();
        for t in 0..1000u32 {
            set.insert(t * 2); // arrivals
            set.insert(t * 2 + 60_001); // their retries a minute later
        }
        assert!(set.scattered.is_empty());
        assert_eq!(set.runs.len(), 2);
        assert_eq!(set.pop_first_if(|&e| e > 0), None);
        assert_eq!(set.pop_first_if(|_| true), Some(0));
        assert!(set.remove(&2));
        assert!(!set.remove(&2));
        assert_eq!(set.first(), Some(4));
    }
}
