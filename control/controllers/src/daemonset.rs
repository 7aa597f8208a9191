//! The DaemonSet controller (being built; see `issues show 4`).

use std::sync::Arc;

use crate::context::Context;

/// Runs the DaemonSet controller until the task is aborted.
pub(crate) async fn run(ctx: Arc<Context>) {
    let _ = ctx;
    std::future::pending::<()>().await
}
