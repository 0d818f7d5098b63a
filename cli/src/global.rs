//! Options shared by every command, and the NATS connection they describe.

use std::path::PathBuf;

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

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub server: String,
    /// NATS credentials file.
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// Subject prefix shared by all components of one installation.
    #[arg(long, global = true, env = "ATTUNE_PREFIX", default_value = attune_nats::subject::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    pub output: Output,
}

/// Why the CLI could not even start talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The prefix is not usable in subjects.
    #[error(transparent)]
    Prefix(#[from] attune_nats::subject::InvalidPrefix),
    /// The credentials file could not be read.
    #[error("reading credentials {path}: {source}")]
    Creds {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server did not accept the connection.
    #[error("cannot connect to NATS at {url}: {source} (is nats-server running? `attune up` starts one)")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
}

impl Global {
    /// The namespace for `--prefix`.
    pub fn namespace(&self) -> Result<Namespace, ConnectError> {
        Ok(Namespace::new(&self.prefix)?)
    }

    /// Connect options for `--creds`, shared by one-shot commands and long-running services.
    pub async fn connect_options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut opts = async_nats::ConnectOptions::new().name("attune");
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::Creds {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(opts)
    }

    /// Connects once, failing fast: a CLI command must not hang when no server is there.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        let opts = self.connect_options().await?;
        opts.connect(self.server.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: self.server.clone(),
                source,
            })
    }
}
