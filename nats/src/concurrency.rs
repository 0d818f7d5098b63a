//! Concurrency limits: how many executions of one action may run at once across *every* runner,
//! and the slots in KV that enforce it.
//!
//! A runner's own `--concurrency` protects its host; it cannot stop ten runners from each running
//! the one action that talks to a fragile API. An action that declares
//! `concurrency: {limit: N, policy: wait|reject}` gets N slots, keys `<pack>.<action>.<i>` in KV
//! `attune-slots`. A runner takes slot `i` by *creating* its key (which succeeds for one runner
//! only) before the process starts, renews it by revision while the process runs, and deletes it
//! when the process has ended. The bucket expires a key [`SLOT_LEASE_TTL`] after its last write,
//! so the slot of a runner that died comes free on its own; the bucket's expiry markers tell
//! waiting runners at once.
//!
//! What happens to an invocation that finds every slot taken is the [`ConcurrencyPolicy`] for a
//! sync call; a job always stays queued until a slot is free.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How long a slot holds unless its runner renews it: how long a dead runner's slot stays taken.
pub const SLOT_LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the holder of a slot renews it.
pub const SLOT_LEASE_RENEW: Duration = Duration::from_secs(1);
/// The largest limit an action may declare. Taking a slot may try each one, so the bound keeps
/// that cost bounded; a limit beyond what every runner together can run limits nothing.
pub const MAX_LIMIT: u32 = 1000;

/// An action's `concurrency:` declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Most executions running at once, across all runners (1..=[`MAX_LIMIT`]).
    pub limit: u32,
    /// What a sync call does when all are running.
    #[serde(default)]
    pub policy: ConcurrencyPolicy,
}

/// What a sync invocation does when its action's slots are all taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Wait for a slot, up to the invocation's timeout.
    #[default]
    Wait,
    /// Refuse at once (429), so the caller can back off or go elsewhere.
    Reject,
}

impl ConcurrencyPolicy {
    /// The name as written in action files.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Wait => "wait",
            ConcurrencyPolicy::Reject => "reject",
        }
    }
}

impl Concurrency {
    /// Every problem with the declared values, for the pack loader (field name, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if (1..=MAX_LIMIT).contains(&self.limit) {
            Vec::new()
        } else {
            vec![(
                "limit",
                format!(
                    "limit must be between 1 and {MAX_LIMIT}, not {}",
                    self.limit
                ),
            )]
        }
    }

    /// How a refusal or a wait describes the limit, e.g. "examples.x allows 2 at once across all
    /// runners (policy wait)".
    pub fn describe(&self, action: &str) -> String {
        format!(
            "action {action} allows {} at once across all runners (concurrency policy {})",
            self.limit,
            self.policy.as_str()
        )
    }
}

/// The value of a taken slot: who holds it, for what, since when. For people and metrics; the
/// key and its revision are what enforce the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHolder {
    /// The action ref.
    pub action: String,
    /// The runner running it.
    pub runner: String,
    /// The execution id.
    pub execution: String,
    /// When the slot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// The KV key of slot `index` of `action` (`<pack>.<action>.<index>`). Refs are checked names
/// (`[A-Za-z0-9_-]` on each side of the dot), so the key is a valid KV key.
pub fn slot_key(action: &str, index: u32) -> String {
    format!("{action}.{index}")
}

/// Splits a slot key back into the action ref and the slot index.
pub fn parse_slot_key(key: &str) -> Option<(&str, u32)> {
    let (action, index) = key.rsplit_once('.')?;
    let index = index.parse().ok()?;
    action.contains('.').then_some((action, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keys_round_trip() {
        let key = slot_key("examples.slow", 3);
        assert_eq!(key, "examples.slow.3");
        assert_eq!(parse_slot_key(&key), Some(("examples.slow", 3)));
        assert_eq!(parse_slot_key("examples.slow"), None);
        assert_eq!(parse_slot_key("slow.x"), None);
    }

    #[test]
    fn limits_are_bounded_and_the_policy_defaults_to_wait() {
        let c: Concurrency = serde_json::from_str(r#"{"limit": 2}"#).unwrap();
        assert_eq!(c.policy, ConcurrencyPolicy::Wait);
        assert!(c.problems().is_empty());
        for bad in [0, MAX_LIMIT + 1] {
            let c = Concurrency {
                limit: bad,
                policy: ConcurrencyPolicy::Reject,
            };
            assert_eq!(c.problems()[0].0, "limit");
        }
        assert!(serde_json::from_str::<Concurrency>(r#"{"limit": 2, "policy": "queue"}"#).is_err());
        assert!(serde_json::from_str::<Concurrency>(r#"{"limit": 2, "max": 3}"#).is_err());
    }
}
