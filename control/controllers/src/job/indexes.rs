//! Completion indexes of Indexed Jobs: the compressed interval form of
//! `status.completedIndexes` (`"1,3-5,7"`, Kubernetes' `orderedIntervals`), and which
//! indexes still need a pod.

use std::collections::BTreeSet;
use std::fmt;

/// A set of completion indexes kept as sorted, disjoint, non-adjacent closed intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    intervals: Vec<(u32, u32)>,
}

impl Indexes {
    /// Parses `status.completedIndexes` as Kubernetes does: intervals `a` or `a-b`
    /// separated by commas; malformed intervals are skipped, indexes at or beyond
    /// `completions` are dropped, adjacent intervals are merged.
    pub(crate) fn parse(text: &str, completions: u32) -> Indexes {
        let mut set = Indexes::default();
        if text.is_empty() {
            return set;
        }
        for part in text.split(',') {
            let mut limits = part.splitn(2, '-');
            let Some(Ok(first)) = limits.next().map(|s| s.trim().parse::<u32>()) else {
                continue;
            };
            if first >= completions {
                continue;
            }
            let last = match limits.next() {
                None => first,
                Some(s) => match s.trim().parse::<u32>() {
                    Ok(last) if last >= first => last.min(completions - 1),
                    _ => continue,
                },
            };
            set.insert_range(first, last);
        }
        set
    }

    /// Adds every index of `first..=last`.
    pub(crate) fn insert_range(&mut self, first: u32, last: u32) {
        let mut merged = (first, last);
        let mut kept = Vec::with_capacity(self.intervals.len() + 1);
        for &(a, b) in &self.intervals {
            // Overlapping or adjacent intervals merge.
            if b.saturating_add(1) < merged.0 || merged.1.saturating_add(1) < a {
                kept.push((a, b));
            } else {
                merged = (merged.0.min(a), merged.1.max(b));
            }
        }
        kept.push(merged);
        kept.sort_unstable();
        self.intervals = kept;
    }

    /// Adds one index.
    pub(crate) fn insert(&mut self, index: u32) {
        self.insert_range(index, index);
    }

    /// Whether `index` is in the set.
    pub(crate) fn contains(&self, index: u32) -> bool {
        self.intervals
            .iter()
            .any(|&(a, b)| a <= index && index <= b)
    }

    /// How many indexes the set holds.
    pub(crate) fn total(&self) -> u32 {
        self.intervals.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// The first `count` indexes below `completions` that are neither in the set nor in
    /// `busy` (the indexes of active pods): the indexes to create pods for next.
    pub(crate) fn first_pending(
        &self,
        busy: &BTreeSet<u32>,
        count: usize,
        completions: u32,
    ) -> Vec<u32> {
        (0..completions)
            .filter(|i| !self.contains(*i) && !busy.contains(i))
            .take(count)
            .collect()
    }
}

impl fmt::Display for Indexes {
    /// Kubernetes' form: `0-2` for three or more, `0,1` for two consecutive indexes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, &(a, b)) in self.intervals.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
            if b == a + 1 {
                write!(f, ",{b}")?;
            } else if b > a {
                write!(f, "-{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_formatted_as_kubernetes_does() {
        let mut set = Indexes::default();
        for i in [4, 0, 2, 1] {
            set.insert(i);
        }
        assert_eq!(set.to_string(), "0-2,4");
        let mut pair = Indexes::default();
        pair.insert(7);
        pair.insert(6);
        assert_eq!(pair.to_string(), "6,7");
        assert_eq!(Indexes::default().to_string(), "");
    }

    #[test]
    fn parsing_merges_adjacent_intervals_and_drops_out_of_range_indexes() {
        let set = Indexes::parse("0-2,3,5,9-12", 11);
        assert_eq!(set.to_string(), "0-3,5,9,10");
        assert_eq!(set.total(), 7);
        assert!(set.contains(10) && !set.contains(4) && !set.contains(11));
    }

    #[test]
    fn malformed_intervals_are_skipped() {
        let set = Indexes::parse("x,1,3-a,5-4,6", 10);
        assert_eq!(set.to_string(), "1,6");
    }

    #[test]
    fn pending_indexes_skip_completed_and_active_ones() {
        let done = Indexes::parse("0,2", 6);
        let busy: BTreeSet<u32> = [1].into_iter().collect();
        assert_eq!(done.first_pending(&busy, 2, 6), vec![3, 4]);
        assert_eq!(done.first_pending(&busy, 10, 6), vec![3, 4, 5]);
    }
}
