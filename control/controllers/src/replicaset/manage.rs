//! How many pods a sync creates or deletes, and how: Kubernetes' `manageReplicas` arithmetic
//! (at most `burstReplicas` per sync) and `slowStartBatch` (creates in batches of 1, 2, 4,
//! ... run concurrently, stopping at the first batch with a failure, so a template the
//! apiserver rejects costs one failed call, not hundreds).

use std::future::Future;

/// The most pods one sync creates or deletes (kube-controller-manager's `burstReplicas`).
pub(crate) const BURST_REPLICAS: usize = 500;

/// The first slow-start batch (Kubernetes' `SlowStartInitialBatchSize`).
pub(crate) const SLOW_START_INITIAL_BATCH: usize = 1;

/// What a sync does about the number of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Create this many pods.
    Create(usize),
    /// Delete this many pods.
    Delete(usize),
    /// The count is right.
    Nothing,
}

/// The plan for `active` owned pods when `replicas` are wanted, capped at `burst`.
pub(crate) fn plan(active: usize, replicas: i32, burst: usize) -> Plan {
    let wanted = usize::try_from(replicas).unwrap_or(0);
    if active < wanted {
        Plan::Create((wanted - active).min(burst))
    } else if active > wanted {
        Plan::Delete((active - wanted).min(burst))
    } else {
        Plan::Nothing
    }
}

/// The batch sizes slow start uses for `count` operations: `initial`, then doubling, the last
/// one cut to what remains.
pub(crate) fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = initial.max(1).min(remaining);
    while remaining > 0 {
        batches.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    batches
}

/// Runs `op` `count` times in slow-start batches, each batch concurrently. Stops after the
/// first batch in which an `op` failed. Returns how many succeeded and the first error; the
/// operations never started are `count - successes - failures in the last batch`, and the
/// caller treats all of `count - successes` as not done (Kubernetes lowers its expectations
/// by that much).
pub(crate) async fn slow_start<F, Fut, E>(count: usize, initial: usize, op: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut successes = 0;
    for size in slow_start_batches(count, initial) {
        let results = futures::future::join_all((0..size).map(|_| op())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn plans_follow_the_difference_capped_by_the_burst() {
        assert_eq!(plan(0, 3, BURST_REPLICAS), Plan::Create(3));
        assert_eq!(plan(5, 1, BURST_REPLICAS), Plan::Delete(4));
        assert_eq!(plan(2, 2, BURST_REPLICAS), Plan::Nothing);
        assert_eq!(plan(0, 1000, BURST_REPLICAS), Plan::Create(500));
        assert_eq!(plan(1000, 0, BURST_REPLICAS), Plan::Delete(500));
        assert_eq!(plan(1, -1, BURST_REPLICAS), Plan::Delete(1));
    }

    #[test]
    fn slow_start_batches_double_from_one() {
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), [1]);
        assert_eq!(slow_start_batches(7, 1), [1, 2, 4]);
        assert_eq!(slow_start_batches(10, 1), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500, 1).iter().sum::<usize>(), 500);
        assert_eq!(slow_start_batches(5, 2), [2, 3]);
    }

    #[tokio::test]
    async fn slow_start_runs_everything_when_nothing_fails() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(10, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        })
        .await;
        assert_eq!((ok, err), (10, None));
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn slow_start_stops_after_the_first_failing_batch() {
        let calls = AtomicUsize::new(0);
        // The 4th call fails: batches 1 and 2 succeed (3 calls), batch 3 (4 calls) has the
        // failure, batch 4 never runs.
        let (ok, err) = slow_start(20, 1, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 3 {
                    Err(format!("call {n} failed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(ok, 6);
        assert_eq!(err.as_deref(), Some("call 3 failed"));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
