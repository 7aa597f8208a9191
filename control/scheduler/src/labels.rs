//! Node labels numbered for fast matching.
//!
//! Matching a `nodeSelector` against thousands of nodes by looking strings up in each
//! node's label map costs a few cache misses and string comparisons per node, which is most
//! of a scheduling cycle on a large cluster. Instead, the [`LabelIndex`] of the snapshot
//! gives every distinct `key=value` pair a number once, each node keeps the sorted numbers of
//! its pairs ([`NodeLabels`]), and a selector is compiled once per pod
//! ([`CompiledSelector`]); matching is then a few integer comparisons in one small array.
//! The numbers are exact (no hashing), so matching is exactly the string comparison. The
//! numbers of a node with up to [`INLINE_PAIRS`] labels are kept inline in its entry, and a
//! 64-bit summary rejects most non-matching nodes at a glance, so matching usually touches
//! no memory beyond the node's own entry.

use std::collections::{BTreeMap, HashMap};

/// Nodes with up to this many labels keep their numbers inline.
pub const INLINE_PAIRS: usize = 12;

/// Numbers for label pairs. Grows with the distinct pairs ever seen on nodes (a few per
/// node), which is small; numbers are never reused, so a stale number cannot match.
#[derive(Debug, Default)]
pub struct LabelIndex {
    pairs: HashMap<String, HashMap<String, u32>>,
    next: u32,
}

impl LabelIndex {
    /// Numbers a node's labels, adding pairs not seen before.
    pub fn intern(&mut self, labels: Option<&BTreeMap<String, String>>) -> NodeLabels {
        let mut pairs: Vec<u32> = labels
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let values = self.pairs.entry(key.clone()).or_default();
                *values.entry(value.clone()).or_insert_with(|| {
                    self.next = self.next.wrapping_add(1);
                    self.next
                })
            })
            .collect();
        pairs.sort_unstable();
        let bits = summary(&pairs);
        let pairs = if pairs.len() <= INLINE_PAIRS {
            let mut ids = [0; INLINE_PAIRS];
            ids[..pairs.len()].copy_from_slice(&pairs);
            Pairs::Inline {
                len: pairs.len() as u8,
                ids,
            }
        } else {
            Pairs::Heap(pairs)
        };
        NodeLabels { bits, pairs }
    }

    /// The number of `key=value`, if any node ever had it.
    pub fn pair(&self, key: &str, value: &str) -> Option<u32> {
        self.pairs
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
    }

    /// Compiles `selector` (every pair required) against this index.
    pub fn compile(&self, selector: &BTreeMap<String, String>) -> CompiledSelector {
        let pairs: Option<Vec<u32>> = selector.iter().map(|(k, v)| self.pair(k, v)).collect();
        CompiledSelector {
            bits: pairs.as_deref().map(summary).unwrap_or(0),
            pairs,
        }
    }
}

/// A node's label pairs as sorted numbers of its snapshot's [`LabelIndex`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLabels {
    bits: u64,
    pairs: Pairs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pairs {
    Inline { len: u8, ids: [u32; INLINE_PAIRS] },
    Heap(Vec<u32>),
}

impl Default for Pairs {
    fn default() -> Self {
        Pairs::Inline {
            len: 0,
            ids: [0; INLINE_PAIRS],
        }
    }
}

impl NodeLabels {
    /// Whether the node has the pair numbered `id`.
    pub fn has(&self, id: u32) -> bool {
        if self.bits & bit(id) == 0 {
            return false;
        }
        match &self.pairs {
            Pairs::Inline { len, ids } => ids[..usize::from(*len)].contains(&id),
            Pairs::Heap(ids) => ids.binary_search(&id).is_ok(),
        }
    }
}

/// A set of required label pairs, numbered against one snapshot's [`LabelIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledSelector {
    bits: u64,
    /// `None` when some pair is on no node, so no node can match.
    pairs: Option<Vec<u32>>,
}

impl CompiledSelector {
    /// Whether a node with `labels` (from the same snapshot) has every pair.
    pub fn matches(&self, labels: &NodeLabels) -> bool {
        match &self.pairs {
            None => false,
            Some(_) if labels.bits & self.bits != self.bits => false,
            Some(pairs) => pairs.iter().all(|id| labels.has(*id)),
        }
    }
}

/// One bit per number (mod 64): a node lacking a bit of the selector lacks a pair.
fn summary(pairs: &[u32]) -> u64 {
    pairs.iter().fold(0, |bits, id| bits | bit(*id))
}

fn bit(id: u32) -> u64 {
    1 << (id % 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_compiled_selector_matches_exactly_the_nodes_with_every_pair() {
        let mut index = LabelIndex::default();
        let ssd = index.intern(Some(&labels(&[("disk", "ssd"), ("zone", "a")])));
        let hdd = index.intern(Some(&labels(&[("disk", "hdd"), ("zone", "a")])));
        let selector = index.compile(&labels(&[("disk", "ssd"), ("zone", "a")]));
        assert!(selector.matches(&ssd));
        assert!(!selector.matches(&hdd));
    }

    #[test]
    fn a_pair_no_node_has_matches_nothing() {
        let mut index = LabelIndex::default();
        let node = index.intern(Some(&labels(&[("disk", "ssd")])));
        assert!(!index.compile(&labels(&[("disk", "nvme")])).matches(&node));
        assert!(!index.compile(&labels(&[("gpu", "ssd")])).matches(&node));
    }

    #[test]
    fn the_same_pair_gets_the_same_number_on_every_node() {
        let mut index = LabelIndex::default();
        let a = index.intern(Some(&labels(&[("zone", "a")])));
        let b = index.intern(Some(&labels(&[("zone", "a")])));
        assert_eq!(a, b);
        assert_eq!(index.pair("zone", "b"), None);
    }

    #[test]
    fn numbers_sharing_a_summary_bit_are_still_told_apart() {
        let mut index = LabelIndex::default();
        // Pairs 1 and 65 share a summary bit.
        let names: Vec<String> = (0..70).map(|i| format!("v{i}")).collect();
        let nodes: Vec<NodeLabels> = names
            .iter()
            .map(|v| index.intern(Some(&labels(&[("k", v.as_str())]))))
            .collect();
        let selector = index.compile(&labels(&[("k", "v64")]));
        let matching: Vec<usize> = (0..70).filter(|i| selector.matches(&nodes[*i])).collect();
        assert_eq!(matching, vec![64]);
    }

    #[test]
    fn nodes_with_many_labels_match_like_nodes_with_few() {
        let mut index = LabelIndex::default();
        let many: Vec<(String, String)> = (0..INLINE_PAIRS + 5)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let node = index.intern(Some(&labels(&refs)));
        assert!(index.compile(&labels(&refs)).matches(&node));
        assert!(
            index
                .compile(&labels(&[("key-16", "value-16")]))
                .matches(&node)
        );
        let few = index.intern(Some(&labels(&[("key-0", "value-0")])));
        assert!(
            !index
                .compile(&labels(&[("key-16", "value-16")]))
                .matches(&few)
        );
    }

    #[test]
    fn an_empty_selector_matches_every_node() {
        let mut index = LabelIndex::default();
        let node = index.intern(None);
        assert!(index.compile(&BTreeMap::new()).matches(&node));
    }
}
