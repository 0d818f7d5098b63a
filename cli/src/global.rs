//! Options shared by every command, and the NATS connection they describe.
//!
//! The connection options are the `nats` CLI's, with its environment variables, so a `nats`
//! context or a shell set up for `nats` works for `attune` unchanged. How they combine with a
//! context lives in `attune_nats::connect`; this file only declares them.

use std::path::PathBuf;
use std::time::Duration;

use attune_nats::connect::{parse_servers, parse_timeout, redact_servers, ConnectSpec, Secret};
use attune_nats::subject::InvalidPrefix;
use attune_nats::Namespace;
use clap::{Args, ValueEnum};

/// Output style: tables and sentences for people, or JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text and tables.
    Text,
    /// Machine-readable JSON, stable across versions.
    Json,
}

/// Options every command accepts. `Debug` hides secrets, including credentials in `--server`.
#[derive(Clone, Args)]
pub struct Global {
    /// NATS server URL(s), comma-separated [default: the context's, else nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "NATS_URL", value_name = "URLS")]
    pub server: Option<String>,
    /// User name, or a token when no password is given.
    #[arg(long, global = true, env = "NATS_USER", hide_env_values = true)]
    pub user: Option<Secret>,
    /// Password for --user.
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// NATS credentials file (user JWT and seed).
    #[arg(long, global = true, env = "NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// TLS client certificate (with --tlskey); any TLS option makes TLS required.
    #[arg(long, global = true, env = "NATS_CERT", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// TLS client private key (with --tlscert).
    #[arg(long, global = true, env = "NATS_KEY", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// CA certificates to verify the server with.
    #[arg(long, global = true, env = "NATS_CA", value_name = "FILE")]
    pub tlsca: Option<PathBuf>,
    /// Do the TLS handshake before the server's INFO (servers with handshake_first).
    #[arg(long, global = true)]
    pub tlsfirst: bool,
    /// How long one connection attempt may take: 5s, 500ms, or seconds.
    #[arg(long, global = true, env = "NATS_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub connect_timeout: Option<Duration>,
    /// A `nats` CLI context: a NAME (under ~/.config/nats/context) or a PATH to a .json file
    /// [default: the one `nats context select` chose, if any].
    #[arg(long, global = true, env = "NATS_CONTEXT", value_name = "NAME|PATH")]
    pub context: Option<String>,
    /// JetStream domain holding Attune's buckets and streams, e.g. the hub's for a runner on a
    /// leaf node whose own server has JetStream [default: the context's, else the account's].
    #[arg(long, global = true, env = "ATTUNE_JS_DOMAIN", value_name = "DOMAIN")]
    pub js_domain: Option<String>,
    /// Subject prefix shared by all components of one installation.
    #[arg(long, global = true, env = "ATTUNE_PREFIX", default_value = attune_nats::subject::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    pub output: Output,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Global")
            .field("server", &self.server.as_deref().map(redact_servers))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("tlscert", &self.tlscert)
            .field("tlskey", &self.tlskey)
            .field("tlsca", &self.tlsca)
            .field("tlsfirst", &self.tlsfirst)
            .field("connect_timeout", &self.connect_timeout)
            .field("context", &self.context)
            .field("js_domain", &self.js_domain)
            .field("prefix", &self.prefix)
            .field("output", &self.output)
            .finish()
    }
}

impl Global {
    /// The namespace for `--prefix`.
    pub fn namespace(&self) -> Result<Namespace, InvalidPrefix> {
        Namespace::new(&self.prefix)
    }

    /// The connection these options describe, before the context is merged in.
    pub fn spec(&self) -> ConnectSpec {
        let mut spec = ConnectSpec {
            servers: self
                .server
                .as_deref()
                .map(parse_servers)
                .unwrap_or_default(),
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            tls_cert: self.tlscert.clone(),
            tls_key: self.tlskey.clone(),
            tls_ca: self.tlsca.clone(),
            tls_first: self.tlsfirst,
            connect_timeout: self.connect_timeout,
            context: self.context.clone(),
            name: Some("attune".into()),
            jetstream_domain: self.js_domain.clone(),
            ..ConnectSpec::default()
        };
        spec.set_user_or_token(
            self.user.as_ref().map(|u| u.expose().to_string()),
            self.password.clone(),
        );
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Just the global options, as `attune` parses them.
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        global: Global,
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let only = Only::try_parse_from([
            "attune",
            "--server",
            "nats://ada:hunter2@h:1,nats://h:2",
            "--user",
            "ada",
            "--password",
            "hunter3",
        ])
        .unwrap();
        let shown = format!("{:?} {:?}", only.global, only.global.spec());
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("h:2"), "{shown}");
    }

    #[test]
    fn a_user_without_password_is_sent_as_a_token() {
        let only = Only::try_parse_from(["attune", "--user", "tok"]).unwrap();
        let spec = only.global.spec();
        assert_eq!(spec.token, Some(Secret::new("tok")));
        assert_eq!(spec.user, None);
    }
}
