//! Admission: how many invocations a runner has accepted, so it can refuse more at once and
//! drain knows when the last one is answered.
//!
//! async-nats delivers every message of a subscription to the client, so the runner bounds what
//! it accepts itself: at most `concurrency + max_pending` accepted at a time (see
//! [`Dispatcher::admit`](crate::service::Dispatcher::admit)); one more is answered at once with
//! `rejected` / 503 "runner overloaded" instead of queueing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts accepted invocations (waiting or running) and wakes a drain when none is left.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Accepted and not yet answered.
    count: AtomicUsize,
    /// Notified whenever `count` drops to zero.
    idle: Notify,
}

/// Decrements the tracker when an invocation is answered, however its task ends.
#[derive(Debug)]
pub struct TrackerGuard(Arc<Tracker>);

impl Tracker {
    /// Accepts one more invocation if fewer than `limit` are accepted.
    pub fn try_enter(self: &Arc<Self>, limit: usize) -> Option<TrackerGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| TrackerGuard(self.clone()))
    }

    /// Accepted and unanswered invocations.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no invocation is accepted.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracker_bounds_admission_and_reports_idle() {
        let t = Arc::new(Tracker::default());
        let a = t.try_enter(2).unwrap();
        let b = t.try_enter(2).unwrap();
        assert!(t.try_enter(2).is_none());
        drop(a);
        assert_eq!(t.count(), 1);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.idle().await }
        });
        drop(b);
        waiter.await.unwrap();
    }
}
