//! A tokio runtime on its own OS threads, optionally at a lower CPU
//! priority than the threads that acknowledge writes.
//!
//! Why: on a small pod, CPU-heavy background work (persisting a partition,
//! encoding a Flight scan of a large buffer) competes with the write path
//! for the same cores. On the runtime that serves RPCs it would also take
//! the worker threads themselves, so an acknowledgement waits behind a
//! scan's encoding. A dedicated runtime hands the sharing to the OS
//! scheduler instead, and a positive `nice` tells it who goes first: the
//! write path gets a core whenever it needs one, the background work takes
//! the rest and loses nothing when the cores are idle.
//!
//! The runtime lives on a control thread that blocks until the
//! [`DedicatedRuntime`] is dropped and then shuts the runtime down there:
//! dropping a runtime blocks, which must not happen inside another
//! runtime's task. Drop itself never blocks; tasks still running are
//! cancelled at their next await point (their `JoinHandle`s resolve to a
//! cancellation error), and blocking work gets up to `grace` to finish.

use std::io;
use std::time::Duration;

use tokio::runtime::Handle;

/// A runtime on `threads` OS threads of its own; shuts down when dropped.
#[derive(Debug)]
pub(crate) struct DedicatedRuntime {
    handle: Handle,
    /// Dropping this wakes the control thread, which shuts the runtime down.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl DedicatedRuntime {
    /// Starts `threads` worker threads (at least one) named `name`, each
    /// `nice` steps below the priority of the thread that calls this (0:
    /// the same priority; Linux keeps a nice value per thread).
    pub(crate) fn start(
        name: &str,
        threads: usize,
        nice: i32,
        grace: Duration,
    ) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("{name}-ctl"))
            .spawn(move || {
                // Resolves (with an error) when the sender is dropped.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(grace);
            })?;
        Ok(Self {
            handle,
            _shutdown: shutdown,
        })
    }

    /// The runtime's handle, to spawn onto it.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Lowers the calling thread's priority by `nice` steps (0 or less: no
/// change). Best effort: a refusal leaves the thread as it was.
pub(crate) fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(unix)]
    // SAFETY: nice(2) only changes the calling thread's scheduling
    // priority; it touches no memory of ours.
    unsafe {
        let _ = libc::nice(nice);
    }
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only on
/// a core nothing else wants, and any other thread that wakes up takes the
/// core from it at once (a niced thread keeps it for up to a scheduler
/// slice). For housekeeping that must never delay the write path. Elsewhere,
/// or if refused, it falls back to [`lower_priority`] by `nice` steps.
/// Returns whether the thread is now `SCHED_IDLE`.
pub(crate) fn run_when_idle(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with
        // a valid parameter; it touches no memory of ours.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return true;
        }
    }
    lower_priority(nice);
    false
}

/// The nice value of the calling thread (Linux: per thread), for tests of
/// the threads this module lowers.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn own_nice() -> i32 {
    // SAFETY: getpriority reads the calling thread's priority.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_threads_are_in_the_idle_class() {
        let (policy, nice) = std::thread::spawn(|| {
            let idle = run_when_idle(10);
            // SAFETY: sched_getscheduler reads the calling thread's policy.
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert!(idle);
            (policy, own_nice())
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        // The caller is untouched.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
        assert_eq!(own_nice(), nice);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn threads_run_below_the_caller_and_stop_when_dropped() {
        let base = own_nice();
        let rt =
            DedicatedRuntime::start("test-dedicated", 2, 5, Duration::from_secs(1)).expect("start");
        let (nice, name) = rt
            .handle()
            .spawn(async { (own_nice(), std::thread::current().name().map(str::to_owned)) })
            .await
            .expect("task");
        assert_eq!(nice, (base + 5).min(19), "worker nice");
        assert_eq!(name.as_deref(), Some("test-dedicated"));
        assert_eq!(own_nice(), base, "the caller's priority is unchanged");

        // A task still pending when the runtime goes is cancelled.
        let pending = rt.handle().spawn(std::future::pending::<()>());
        drop(rt);
        let err = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the task ends with the runtime")
            .expect_err("cancelled");
        assert!(err.is_cancelled(), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn nice_zero_keeps_the_priority() {
        let base = own_nice();
        let rt = DedicatedRuntime::start("test-dedicated0", 1, 0, Duration::from_secs(1))
            .expect("start");
        let nice = rt.handle().spawn(async { own_nice() }).await.expect("task");
        assert_eq!(nice, base);
    }
}
