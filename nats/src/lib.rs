//! `attune-nats`: the contract every Attune component speaks.
//!
//! The registry, the runners, the CLI and any foreign client agree on subjects, bucket names,
//! message shapes and version rules. Keeping all of them in this one crate means a rule can only
//! be stated once: if two components disagree, one of them is not using this crate.
//!
//! # Layout
//! - [`subject`]: the [`Namespace`] that builds every subject, queue group, KV bucket, object
//!   store and stream name from the configurable prefix, plus the registry operations.
//! - [`key`]: [`VersionKey`], the `(runtime, version)` pair and every name derived from it.
//! - [`name`]: checks on ids and action refs that arrive from the bus.
//! - [`version`]: lenient version parsing, constraints as npm and PEP 440 users write them
//!   (`>=18 <21`, `~=3.11,!=3.12.1`, `~3.11 || ~3.13`), and
//!   selection of the best available version with a reason for every candidate.
//! - [`resolve`]: the one resolver, action → runtime → constraint → version, sync or for a job,
//!   and the one wording of every refusal.
//! - [`concurrency`]: action concurrency limits held cluster-wide by slots in KV.
//! - [`reply`]: the one reply vocabulary: rejections and their headers, request ids, jobs, and
//!   the reply of a finished process.
//! - [`model`]: the registered model (runtimes, versions, execution configs, actions, sensors,
//!   pack metadata) as stored in redb and published on KV.
//! - [`client`]: a Rust client (resolve, invoke, registry API) that the CLI, tests and bench share.
//! - [`wire`]: invocation requests and replies, runner heartbeats, registry API errors.
//! - [`api`]: the request and reply bodies of every registry API operation.
//! - [`archive`]: the deterministic pack archive and its digest, shared by the registry (writer)
//!   and the runners (reader).
//! - [`jetstream`]: the KV buckets and object stores with their one configuration: provisioned
//!   (created, updated) by the registry alone, opened by runners and clients, who are told
//!   clearly when one is missing or different; and the heartbeat timing both sides agree on.
//! - [`jobs`]: durable asynchronous invocations: the job, the result record with its attempts,
//!   retry policies, and the jobs stream (provisioned by the registry), its consumers and the
//!   results object store.
//! - [`watch`]: [`KvFollower`](watch::KvFollower), the one KV watch that survives errors,
//!   restarts and wiped buckets.
//! - [`roles`]: the four roles (admin, registry, runner, client) and the least NATS permissions
//!   of each, derived from the namespace.
//! - [`auth`]: `attune auth init`'s work: an nkey per user, the nats-server configuration with
//!   those permissions, `nats` CLI contexts, and optional TLS certificates.
//! - [`shutdown`]: the one shutdown signal both services' tasks select on.
//! - [`yaml`]: YAML from untrusted sources with alias expansion bounded.
//! - [`connect`]: connecting like the `nats` CLI: `nats` contexts, server lists, users,
//!   tokens, creds, nkeys, TLS, the JetStream domain every component opens JetStream in
//!   (`--js-domain`, for runners on leaf nodes), and the permission violations a server reports.
//! - [`local`]: finding and starting a local nats-server (`attune up`, tests, bench).
//! - [`time`]: RFC 3339 formatting for people (every time on the wire is RFC 3339).

pub mod api;
pub mod archive;
pub mod auth;
pub mod client;
pub mod concurrency;
pub mod connect;
pub mod events;
pub mod executions;
pub mod jetstream;
pub mod jobs;
pub mod key;
pub mod local;
pub mod metrics;
pub mod micro;
pub mod model;
pub mod name;
pub mod reply;
pub mod resolve;
pub mod roles;
pub mod shutdown;
pub mod subject;
pub mod time;
pub mod version;
pub mod watch;
pub mod wire;
pub mod yaml;

pub use key::VersionKey;
pub use model::{
    Action, Criterion, CriterionOp, ExecutionConfig, PackMeta, Rule, RuleAction, Runtime,
    RuntimeVersion, Sensor, TriggerType,
};
pub use subject::{Namespace, RegistryOp};
pub use version::{parse_version, select, Candidate, Constraint, NoMatch, Selection};
pub use wire::{InvocationReply, InvocationRequest, RunnerHeartbeat, Status};
