//! `attune-registry`: the source of truth for packs, runtimes, versions and actions.
//!
//! The registry loads pack directories, keeps what they define in a redb file, publishes that as
//! an exact projection on NATS (KV buckets `attune-runtimes`, `attune-actions`, `attune-packs`
//! and the object store `attune-pack-files`), answers the registry API on
//! `attune.registry.<operation>`, follows runner heartbeats to know which versions are
//! available, and routes by-name invocations (`attune.action.<pack>.<action>`) to the version
//! subject a runner serves.
//!
//! Follow one change: an API request ([`api`]) calls the [`registry`] core, which validates with
//! [`pack`], commits to the [`store`], mirrors with [`publish`] and refreshes the [`view`] the
//! [`router`] reads. [`serve`] wires it all and is what `attune registry serve` calls.
//!
//! # Layout
//! - [`pack`]: reading a pack directory into the registered model, with strict validation that
//!   reports every problem as `file:line: message`.
//! - [`store`]: the redb tables, one transaction per change, and the invariants (one default per
//!   runtime, no runtime removed while in use); pack archives are kept here too.
//! - [`provision`]: the set-up step, the only code in Attune that creates or updates JetStream
//!   buckets, object stores and streams, with the operator's replicas, TTLs and limits.
//! - [`publish`]: the full mirror of the store to KV and the object store, deleting stale keys and
//!   uploading only archives that are missing.
//! - [`registry`]: the core every change goes through (validate → commit → publish → view), and
//!   [`RegistryError`] with its API status codes.
//! - [`view`]: runtimes, actions and precomputed routes in memory, fed by the registry and by KV
//!   watches; answers the router and `resolve`.
//! - [`liveness`]: live runners from their heartbeats, each with a deadline (TTL sweeping).
//! - [`availability`]: liveness → `available` / `verified_at` in the store, kept current.
//! - [`router`]: the by-name router, forwarding with the requester's reply subject.
//! - [`routes`]: each action's route in KV `attune-routes`, written only when it changes, so a
//!   client resolves with one read.
//! - [`rule`]: rules compiled once (criteria, payload paths, parameter templates) and evaluated
//!   against an event's payload; the pack loader uses the same compiler to refuse bad rules.
//! - [`fire`]: events from stream `ATTUNE_EVENTS` evaluated against the rules; a match enqueues
//!   a durable job naming the event and the rule.
//! - [`enqueue`]: by-name calls with `Attune-Async: true`, enqueued as durable jobs.
//! - [`api`]: the micro service and one file per operation group.
//! - [`serve`]: start-up order, the supervisor (republish after failures or a wiped JetStream),
//!   and clean shutdown.

pub mod api;
pub mod availability;
pub mod enqueue;
pub mod fire;
pub mod liveness;
pub mod metrics;
pub mod pack;
pub mod provision;
pub mod publish;
pub mod registry;
pub mod router;
pub mod routes;
pub mod rule;
pub mod serve;
pub mod store;
pub mod view;

pub use provision::{provision, Provisioned};
pub use registry::{Registry, RegistryError};
pub use serve::{serve, start, RunningRegistry, ServeConfig};
