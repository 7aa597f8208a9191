//! What the garbage collector does with one dependent once it has looked up each of its
//! owners (Kubernetes' `attemptToDeleteItem`): nothing, drop some owner references, or
//! delete it with a propagation policy.

use super::graph::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Uid};

/// What the apiserver said about one owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OwnerState {
    /// The owner exists with the referenced uid and is not deleting its dependents.
    Solid,
    /// No object of that name, or one with another uid: the owner is gone.
    Dangling,
    /// The owner exists and is being deleted in the foreground.
    WaitingForDependentsDeletion,
}

/// The propagation policy of a deletion by the garbage collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// What to do with the dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It has an owner that stays: leave it.
    Keep,
    /// It has an owner that stays: remove the references to these (gone or
    /// foreground-deleting) owners so they do not wait for it.
    RemoveOwnerReferences(Vec<Uid>),
    /// Its dependents themselves wait for an owner deleting in the foreground (a
    /// cycle): set `blockOwnerDeletion: false` on the references to these owners.
    UnblockOwnerReferences(Vec<Uid>),
    /// Every owner is gone or waiting for it: delete it.
    Delete(Policy),
}

/// Decides for a dependent with the given owner references (uid and what the apiserver
/// said), its own finalizers, whether it has dependents, and whether one of those is
/// itself deleting its dependents.
pub(crate) fn decide(
    owners: &[(Uid, OwnerState)],
    finalizers: &[String],
    has_dependents: bool,
    a_dependent_is_deleting_dependents: bool,
) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let uids_in = |state: OwnerState| -> Vec<Uid> {
        owners
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(u, _)| u.clone())
            .collect()
    };
    let solid = uids_in(OwnerState::Solid);
    let dangling = uids_in(OwnerState::Dangling);
    let waiting = uids_in(OwnerState::WaitingForDependentsDeletion);
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        let mut gone = dangling;
        gone.extend(waiting);
        return Decision::RemoveOwnerReferences(gone);
    }
    if !waiting.is_empty() && has_dependents {
        if a_dependent_is_deleting_dependents {
            return Decision::UnblockOwnerReferences(waiting);
        }
        return Decision::Delete(Policy::Foreground);
    }
    // Every owner is gone (or waiting and this has nothing to wait for): delete it as
    // its own finalizers ask, else in the background.
    let policy = if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        Policy::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        Policy::Foreground
    } else {
        Policy::Background
    };
    Decision::Delete(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnerState::*;

    fn owners(list: &[(&str, OwnerState)]) -> Vec<(Uid, OwnerState)> {
        list.iter()
            .map(|(u, s)| (u.to_string(), s.clone()))
            .collect()
    }

    #[test]
    fn a_dependent_whose_only_owner_is_gone_is_deleted_in_the_background() {
        assert_eq!(
            decide(&owners(&[("a", Dangling)]), &[], false, false),
            Decision::Delete(Policy::Background)
        );
    }

    #[test]
    fn a_dependent_with_one_owner_left_keeps_it_and_drops_the_references_to_the_gone_ones() {
        assert_eq!(
            decide(&owners(&[("a", Solid)]), &[], false, false),
            Decision::Keep
        );
        assert_eq!(
            decide(
                &owners(&[
                    ("a", Dangling),
                    ("b", Solid),
                    ("c", WaitingForDependentsDeletion)
                ]),
                &[],
                true,
                false
            ),
            Decision::RemoveOwnerReferences(vec!["a".into(), "c".into()])
        );
    }

    #[test]
    fn a_dependent_with_dependents_of_its_own_is_deleted_in_the_foreground_for_a_waiting_owner() {
        let waiting = owners(&[("a", WaitingForDependentsDeletion)]);
        assert_eq!(
            decide(&waiting, &[], true, false),
            Decision::Delete(Policy::Foreground)
        );
        // Without dependents there is nothing to wait for.
        assert_eq!(
            decide(&waiting, &[], false, false),
            Decision::Delete(Policy::Background)
        );
        // A cycle is broken by unblocking instead.
        assert_eq!(
            decide(&waiting, &[], true, true),
            Decision::UnblockOwnerReferences(vec!["a".into()])
        );
    }

    #[test]
    fn the_dependents_own_gc_finalizer_picks_the_policy() {
        let gone = owners(&[("a", Dangling)]);
        assert_eq!(
            decide(&gone, &["orphan".into()], true, false),
            Decision::Delete(Policy::Orphan)
        );
        assert_eq!(
            decide(&gone, &["foregroundDeletion".into()], true, false),
            Decision::Delete(Policy::Foreground)
        );
    }

    #[test]
    fn objects_without_owners_are_left_alone() {
        assert_eq!(decide(&[], &[], true, false), Decision::Keep);
    }
}
