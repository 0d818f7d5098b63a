//! `attune-runner`: finds out which runtime versions this host can really execute, and serves
//! invocations for exactly those over NATS (docs/runner.md).
//!
//! The story of one runner: it loads runtime definitions, actions and pack metadata from KV;
//! verifies every version of the runtimes it may serve, in parallel, pinning the absolute path of
//! each binary that passes; fetches the packs' code from the object store into its own cache;
//! sets up per-pack environments; then serves one micro-service endpoint per verified version,
//! heartbeats, and keeps watching KV so new runtimes, versions and packs are picked up without a
//! restart. On SIGTERM it drains.
//!
//! # Layout
//! - [`config`]: [`RunnerConfig`], every setting with its default.
//! - [`server`]: start-up order and drain ([`start`], [`run`], [`RunnerHandle`]).
//! - [`follow`]: the KV buckets followed (through errors and wipes) as changes.
//! - [`reconcile`]: the one task that changes what is served: a pure plan over the catalog,
//!   then verify, fetch, build environments, publish, serve.
//! - [`catalog`]: the in-memory view the invocation path reads (no KV, files or `PATH` per call).
//! - [`verify`]: verification commands, timeouts, version detection, binary pinning.
//! - [`packs`]: fetching pack archives by digest into the cache; old files live until unused.
//! - [`env`]: per-(pack, version) environments, atomic builds, checksum markers, host lock.
//! - [`check`]: what every request must pass (action, runtime, version, parameter schema).
//! - [`concurrency`]: cluster-wide concurrency limits: the slots of limited actions in KV.
//! - [`execute`]: one process: stdin or a parameters file, process group, timeout kill,
//!   capped capture. Independent of NATS.
//! - [`contain`]: no process outlives its invocation or the runner (spawning thread, parent-death
//!   signal, subreapers, tree kill, records for a restarted runner), and bounded commands for
//!   builds and verification.
//! - [`private`]: the `0700` directory of parameter files and process records, cleaned at start.
//! - [`delivery`]: parameters serialised per `parameter_format`.
//! - [`output`]: stdout parsed into the result per `output_format`.
//! - [`service`]: the invocation path, from the request to the reply.
//! - [`admission`]: how many invocations are accepted, for back-pressure and drain.
//! - [`procenv`]: the minimal environment of an action's process.
//! - [`endpoints`]: the `attune-runner` micro service, one endpoint per served version.
//! - [`jobs`]: durable async invocations: pulling from `ATTUNE_JOBS` only with a free slot,
//!   results in `attune-results`, retries and dead letters, acknowledging last.
//! - [`heartbeat`]: the runner's entry in `attune-runners`.
//! - [`template`]: `{pack_dir}`, `{env_dir}`, `{interpreter}`, `{manifest_path}`.
//! - [`warm`]: pre-started interpreters (a python zygote that forks a child per invocation,
//!   node processes started ahead), pooled per (pack, version) environment.

pub mod admission;
pub mod catalog;
pub mod check;
pub mod concurrency;
pub mod config;
pub mod contain;
pub mod delivery;
pub mod endpoints;
pub mod env;
pub mod execute;
pub mod follow;
pub mod heartbeat;
pub mod history;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod output;
pub mod packs;
pub mod private;
pub mod procenv;
pub mod reconcile;
pub mod reverify;
pub mod sensors;
pub mod server;
pub mod service;
pub mod template;
pub mod verify;
pub mod warm;

pub use config::RunnerConfig;
pub use server::{run, start, RunnerError, RunnerHandle};
