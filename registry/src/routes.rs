//! KV `attune-routes`: each action's current route, for clients that resolve with one read.
//!
//! The one resolver decides in [`crate::view`]; this task only writes what it decided, and only
//! what changed: it remembers what is in the bucket (read once at start, so a restarted registry
//! rewrites nothing that is already right), puts the documents that differ and deletes the ones
//! of actions that are gone. A heartbeat that changes no route writes nothing. A failed write is
//! retried at the next change or check, never lost: what was not written is not remembered as
//! written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::shutdown::Shutdown;
use attune_nats::wire::ActionRoute;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::registry::Registry;

/// Writes route changes until shutdown; checks every `interval` that nothing is left unwritten.
pub async fn run(registry: Arc<Registry>, interval: Duration, mut shutdown: Shutdown) {
    let mut docs = registry.view.routes();
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut store: Option<Store> = None;
    let mut written: Option<HashMap<String, ActionRoute>> = None;
    loop {
        if store.is_none() {
            match open_kv(registry.publisher.jetstream(), &registry.ns, Bucket::Routes).await {
                Ok(s) => store = Some(s),
                Err(e) => warn!(error = %e, "cannot open the routes bucket; retrying"),
            }
        }
        if let Some(kv) = &store {
            if written.is_none() {
                written = current(kv).await;
            }
            if let Some(w) = written.as_mut() {
                let wanted = docs.borrow_and_update().clone();
                sync(kv, w, &wanted).await;
            }
        }
        tokio::select! {
            _ = shutdown.recv() => break,
            changed = docs.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
    }
}

/// What the bucket holds now, or `None` when it cannot be read (then the next round tries).
async fn current(kv: &Store) -> Option<HashMap<String, ActionRoute>> {
    let mut keys = match kv.keys().await {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "cannot list the routes bucket; retrying");
            return None;
        }
    };
    let mut out = HashMap::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { return None };
        // An entry this registry cannot read is simply rewritten.
        if let Ok(Some(bytes)) = kv.get(&key).await {
            if let Ok(doc) = serde_json::from_slice::<ActionRoute>(&bytes) {
                out.insert(key, doc);
            }
        }
    }
    Some(out)
}

/// Puts what differs between `written` and `wanted`, deletes what is no longer wanted, and
/// records what succeeded.
async fn sync(
    kv: &Store,
    written: &mut HashMap<String, ActionRoute>,
    wanted: &HashMap<String, ActionRoute>,
) {
    for (key, doc) in wanted {
        if written.get(key) == Some(doc) {
            continue;
        }
        let body = serde_json::to_vec(doc).expect("a route serialises");
        match kv.put(key, body.into()).await {
            Ok(_) => {
                debug!(action = %key, "route written");
                written.insert(key.clone(), doc.clone());
            }
            Err(e) => warn!(action = %key, error = %e, "cannot write the route; retrying"),
        }
    }
    let gone: Vec<String> = written
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        match kv.purge(&key).await {
            Ok(()) => {
                written.remove(&key);
            }
            Err(e) => warn!(action = %key, error = %e, "cannot delete the route; retrying"),
        }
    }
}
