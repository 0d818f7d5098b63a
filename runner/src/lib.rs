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
//! - [`server`]: start-up order, the reconciler that applies KV changes, and drain
//!   ([`start`], [`run`], [`RunnerHandle`]).
//! - [`catalog`]: the in-memory view the invocation path reads (no KV, files or `PATH` per call).
//! - [`verify`]: verification commands, timeouts, version detection, binary pinning.
//! - [`packs`]: fetching pack archives by digest into the cache; old files live until unused.
//! - [`env`]: per-(pack, version) environments, atomic builds, checksum markers, host lock.
//! - [`check`]: what every request must pass (action, runtime, version, parameter schema).
//! - [`execute`]: one process: minimal env, parameter delivery, process group, timeout kill,
//!   capped capture, output parsing. Independent of NATS.
//! - [`service`]: the `attune-runner` micro service, back-pressure, and the invocation path.
//! - [`jobs`]: durable async invocations: pulling from `ATTUNE_JOBS` only with a free slot,
//!   results in `attune-results`, retries and dead letters, acknowledging last.
//! - [`heartbeat`]: the runner's entry in `attune-runners`.
//! - [`shutdown`]: the one shutdown signal every loop selects on.
//! - [`template`]: `{pack_dir}`, `{env_dir}`, `{interpreter}`, `{manifest_path}`.

pub mod catalog;
pub mod check;
pub mod config;
pub mod env;
pub mod execute;
pub mod heartbeat;
pub mod jobs;
pub mod packs;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod template;
pub mod verify;

pub use config::RunnerConfig;
pub use server::{run, start, RunnerError, RunnerHandle};
