//! The id → slot index: a sorted run searched from a finger, plus a hash map for the rest.
//!
//! Hosts hand out ids in arrival order, and the queue is asked about them in nearly that
//! order (answers follow `poll`, which follows due order; pruning walks the slab). So ids are
//! appended to a sorted vector, and each lookup gallops from where the last one ended: a step
//! or two, on memory that is already in cache, however many items are held. A hash map would
//! cost a cache miss per lookup once it outgrows the caches. Ids that arrive below the run's
//! last go to a hash map. Removal leaves a hole that compaction reclaims once holes are half
//! the run, so each entry is moved a bounded number of times.

use std::collections::HashMap;

use crate::ItemId;

/// Where an item's body sits in the slab.
pub(crate) type Slot = u32;

/// Compaction waits until the run holds at least this many entries.
const MIN_COMPACT: usize = 64;

#[derive(Debug, Clone, Default)]
pub(crate) struct IdIndex {
    /// Ascending ids from `head` on, with their slot, `None` once removed.
    run: Vec<(ItemId, Option<Slot>)>,
    /// Entries before `head` are all removed.
    head: usize,
    /// Removed entries from `head` on.
    holes: usize,
    /// Where the last mutable lookup ended: the next one starts there.
    finger: usize,
    /// Ids that arrived below the run's last.
    scattered: HashMap<ItemId, Slot>,
}

impl IdIndex {
    /// An empty index with room for `n` ids.
    pub(crate) fn with_capacity(n: usize) -> Self {
        IdIndex {
            run: Vec::with_capacity(n),
            ..IdIndex::default()
        }
    }

    /// Number of ids held.
    pub(crate) fn len(&self) -> usize {
        self.run.len() - self.head - self.holes + self.scattered.len()
    }

    /// The slot of `id`.
    pub(crate) fn get(&self, id: ItemId) -> Option<Slot> {
        match self.position(id, self.finger) {
            Some(i) if self.run[i].1.is_some() => self.run[i].1,
            _ => self.scattered.get(&id).copied(),
        }
    }

    /// The slot of `id`, moving the finger there.
    pub(crate) fn find(&mut self, id: ItemId) -> Option<Slot> {
        match self.position(id, self.finger) {
            Some(i) if self.run[i].1.is_some() => {
                self.finger = i;
                self.run[i].1
            }
            _ => self.scattered.get(&id).copied(),
        }
    }

    /// Maps `id` to `slot`; returns the slot it had.
    pub(crate) fn insert(&mut self, id: ItemId, slot: Slot) -> Option<Slot> {
        if self.run.last().is_none_or(|&(last, _)| last < id) {
            self.run.push((id, Some(slot)));
            return None;
        }
        match self.position(id, self.finger) {
            Some(i) if self.run[i].1.is_some() => self.run[i].1.replace(slot),
            _ => self.scattered.insert(id, slot),
        }
    }

    /// Forgets `id`; returns its slot.
    pub(crate) fn remove(&mut self, id: ItemId) -> Option<Slot> {
        let Some(i) = self
            .position(id, self.finger)
            .filter(|&i| self.run[i].1.is_some())
        else {
            return self.scattered.remove(&id);
        };
        self.finger = i;
        let slot = self.run[i].1.take()?;
        self.holes += 1;
        while self.run.get(self.head).is_some_and(|e| e.1.is_none()) {
            self.head += 1;
            self.holes -= 1;
        }
        let removed = self.head + self.holes;
        if removed * 2 > self.run.len() && self.run.len() >= MIN_COMPACT {
            self.run.retain(|e| e.1.is_some());
            self.head = 0;
            self.holes = 0;
            self.finger = 0;
        }
        Some(slot)
    }

    /// Where the run holds `id` (live or removed), galloping out from `finger`.
    fn position(&self, id: ItemId, finger: usize) -> Option<usize> {
        let live = &self.run[self.head..];
        let (first, last) = (live.first()?.0, live.last()?.0);
        if id < first || last < id {
            return None;
        }
        let f = finger.saturating_sub(self.head).min(live.len() - 1);
        // Bracket `id` in live[lo..hi] with steps that double: O(log distance).
        let (lo, hi) = if live[f].0 <= id {
            let (mut lo, mut step) = (f, 1);
            loop {
                let next = lo + step;
                if next >= live.len() || live[next].0 > id {
                    break (lo, next.min(live.len()));
                }
                lo = next;
                step *= 2;
            }
        } else {
            let (mut hi, mut step) = (f, 1);
            loop {
                match hi.checked_sub(step) {
                    Some(next) if live[next].0 > id => {
                        hi = next;
                        step *= 2;
                    }
                    Some(next) => break (next, hi),
                    None => break (0, hi),
                }
            }
        };
        let i = live[lo..hi].binary_search_by_key(&id, |e| e.0).ok()?;
        Some(self.head + lo + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert the next id of an ascending stream, or an arbitrary one.
        Insert {
            ascending: bool,
            id: u16,
        },
        Remove(u16),
        Find(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop::bool::weighted(0.8), any::<u16>()).prop_map(|(ascending, id)| Op::Insert { ascending, id }),
            3 => any::<u16>().prop_map(Op::Remove),
            2 => any::<u16>().prop_map(Op::Find),
        ]
    }

    proptest! {
        /// Behaves exactly as a `HashMap`, whatever the order of ids.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut index = IdIndex::default();
            let mut model: HashMap<ItemId, Slot> = HashMap::new();
            let mut next = 0u64;
            for (n, op) in ops.into_iter().enumerate() {
                let slot = n as Slot;
                match op {
                    Op::Insert { ascending, id } => {
                        let id = if ascending { next += 1 + u64::from(id % 3); ItemId(next) } else { ItemId(u64::from(id) % (next + 10)) };
                        prop_assert_eq!(index.insert(id, slot), model.insert(id, slot));
                    }
                    Op::Remove(id) => {
                        let id = ItemId(u64::from(id) % (next + 10));
                        prop_assert_eq!(index.remove(id), model.remove(&id));
                    }
                    Op::Find(id) => {
                        let id = ItemId(u64::from(id) % (next + 10));
                        prop_assert_eq!(index.get(id), model.get(&id).copied());
                        prop_assert_eq!(index.find(id), model.get(&id).copied());
                    }
                }
                prop_assert_eq!(index.len(), model.len());
            }
        }
    }

    #[test]
    fn ascending_ids_stay_in_the_run_and_holes_are_reclaimed() {
        let mut index = IdIndex::default();
        for i in 0..1000 {
            assert_eq!(index.insert(ItemId(i * 2), i as Slot), None);
        }
        assert!(index.scattered.is_empty());
        assert_eq!(index.find(ItemId(500)), Some(250));
        assert_eq!(index.find(ItemId(501)), None);
        // Removing every other id from the middle compacts once holes pass half.
        for i in (0..1000).step_by(2).chain((1..1000).step_by(2)) {
            assert_eq!(index.remove(ItemId(i * 2)), Some(i as Slot));
        }
        assert_eq!(index.len(), 0);
        assert!(index.run.len() < MIN_COMPACT);
    }
}
