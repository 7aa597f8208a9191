//! The raw store peer: durable creates straight into the embedded redb store, in-process,
//! at the same concurrencies as the HTTP benchmark, to show what the API layer costs.

use super::report::CreateResult;

/// Runs one create level per entry of `levels` against a fresh store in a temporary directory.
pub(crate) async fn run_levels(
    _levels: &[u64],
    _creates: usize,
) -> anyhow::Result<Vec<CreateResult>> {
    anyhow::bail!("the redb store backend is not available yet")
}
