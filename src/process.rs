//! What each long-running command (`server`, `agent`, `controllers`) sets up for its
//! process before its components start: the open-file limit ([`open_files`]) and handing
//! the memory glibc's allocator keeps after a burst of work back to the kernel
//! ([`allocator`]). Both are process-wide, so they live in the binary, not in a library
//! that another host process might embed.

pub(crate) mod allocator;
pub(crate) mod open_files;

/// Raises the open-file limit (logged) and starts the allocator trim task, which ends when
/// `stopped` resolves.
pub(crate) fn prepare(stopped: impl Future<Output = ()> + Send + 'static) {
    open_files::raise_and_log();
    allocator::start(stopped);
}
