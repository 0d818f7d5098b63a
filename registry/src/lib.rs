//! `attune-registry`: the source of truth for packs, runtimes, versions and actions.
//!
//! # Layout
//! - [`pack`]: reading a pack directory into the registered model, with strict validation that
//!   reports every problem as `file:line: message`.
pub mod pack;
