//! The one shutdown signal every loop of the registry and the runner selects on.
//!
//! In the manner of mini-redis: a tiny type passed to every task instead of flags scattered
//! around. Both services use this one type and its one verb, [`Shutdown::recv`]. It wraps a `watch` channel rather than a broadcast one because a late subscriber must
//! still see a shutdown that already happened, and a watch cannot lag: only one value is ever sent.

use tokio::sync::watch;

/// The sending side: whoever owns the service triggers shutdown through it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    /// `true` once shutdown was requested.
    tx: watch::Sender<bool>,
}

/// A receiver of the shutdown signal; cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Observes the trigger's value.
    rx: watch::Receiver<bool>,
}

/// A new trigger and its first receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Signals every receiver. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A new receiver, for a task started later.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Whether shutdown has been signalled.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Shutdown {
    /// Whether shutdown has been signalled.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is signalled (at once if it already was). If the trigger is dropped
    /// without firing, that counts as a shutdown too: nobody could fire it any more.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_receivers_see_an_earlier_shutdown() {
        let (trigger, mut first) = channel();
        assert!(!first.is_triggered());
        trigger.trigger();
        first.recv().await;
        let mut late = trigger.subscribe();
        late.recv().await;
        assert!(late.is_triggered());
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_shutdown() {
        let (trigger, mut rx) = channel();
        drop(trigger);
        rx.recv().await;
    }
}
