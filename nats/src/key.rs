//! [`VersionKey`]: one version of one runtime, the key everything per-version is filed under.
//!
//! Runners serve, heartbeat, pull jobs and build environments per version; the registry keeps
//! availability per version. Each of those needs a name derived from the pair (a subject, a
//! consumer, an endpoint, a directory). Deriving them here, from one type, means no component
//! formats `"rt/ver"` by hand and no two of them can spell the same name differently.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subject::Namespace;
use crate::version::IMPLICIT_VERSION;

/// A `(runtime, version)` pair: `python` `3.12`, or `shell` `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VersionKey {
    /// The runtime's canonical name (`python`), never an alias.
    pub runtime: String,
    /// The registered version name (`3.12`), or `default` for a version-less runtime.
    pub version: String,
}

impl VersionKey {
    /// The key of `runtime` `version`.
    pub fn new(runtime: impl Into<String>, version: impl Into<String>) -> Self {
        VersionKey {
            runtime: runtime.into(),
            version: version.into(),
        }
    }

    /// `attune.invoke.<runtime>.<version>`: where runners serve this version.
    pub fn invoke_subject(&self, ns: &Namespace) -> String {
        ns.invoke(&self.runtime, &self.version)
    }

    /// `attune.jobs.<runtime>.<version>`: where durable jobs for this version wait.
    pub fn jobs_subject(&self, ns: &Namespace) -> String {
        ns.jobs(&self.runtime, &self.version)
    }

    /// The durable consumer every runner of this version pulls jobs from. Consumer names forbid
    /// dots, and versions usually have some.
    pub fn consumer(&self) -> String {
        format!("jobs-{}-{}", self.runtime, self.version.replace('.', "_"))
    }

    /// The micro-service endpoint name (`python-3_12`); endpoint names forbid dots too.
    pub fn endpoint(&self) -> String {
        format!("{}-{}", self.runtime, self.version.replace('.', "_"))
    }

    /// The directory name of a pack's environment for this version: `python-3.12`, or just the
    /// runtime name for the implicit `default` version (the base environment).
    pub fn env_dir_name(&self) -> String {
        if self.version == IMPLICIT_VERSION {
            self.runtime.clone()
        } else {
            format!("{}-{}", self.runtime, self.version)
        }
    }
}

impl fmt::Display for VersionKey {
    /// `python 3.12`, as logs and messages write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.runtime, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_derived_name_follows_the_pair() {
        let ns = Namespace::default();
        let k = VersionKey::new("python", "3.12");
        assert_eq!(k.invoke_subject(&ns), "attune.invoke.python.3.12");
        assert_eq!(k.jobs_subject(&ns), "attune.jobs.python.3.12");
        assert_eq!(k.consumer(), "jobs-python-3_12");
        assert_eq!(k.endpoint(), "python-3_12");
        assert_eq!(k.env_dir_name(), "python-3.12");
        assert_eq!(k.to_string(), "python 3.12");
    }

    #[test]
    fn the_implicit_version_uses_the_base_environment() {
        let k = VersionKey::new("shell", IMPLICIT_VERSION);
        assert_eq!(k.env_dir_name(), "shell");
        assert_eq!(k.endpoint(), "shell-default");
    }
}
