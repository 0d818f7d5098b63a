//! `attune auth init`: the files a secured installation runs with. The generation itself is
//! [`attune_nats::auth`]; this file parses the options and prints what was written (never a
//! seed or a private key).

use std::path::PathBuf;
use std::process::ExitCode;

use attune_nats::auth::{self, AuthOptions};
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output;

/// Keys, permissions and contexts for running Attune on a secured NATS server.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Generate an nkey per role user, a nats-server configuration giving each user the least
    /// permissions of its role (admin, registry, runner, client), and a `nats` CLI context per
    /// user in DIR/contexts/<user>.json. Refuses to replace existing keys without --force.
    ///
    /// Examples:
    ///   attune auth init ./auth
    ///   attune auth init ./auth --listen 0.0.0.0 --public-host nats.example.com --tls
    ///   attune auth init ./auth --client ci --client alice
    Init(InitArgs),
}

/// Options of `attune auth init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write into (created, readable by its owner only).
    pub dir: PathBuf,
    /// The address nats-server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: String,
    /// The port nats-server listens on.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// The host name clients use to reach the server (the contexts' URL; also put in the server
    /// certificate). Default: the listen address, or 127.0.0.1 when listening on all addresses.
    #[arg(long)]
    pub public_host: Option<String>,
    /// nats-server's JetStream store directory (default: DIR/jetstream).
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// Also generate a private CA, a server certificate and one client certificate per user, and
    /// require TLS with client certificates.
    #[arg(long)]
    pub tls: bool,
    /// Another DNS name or IP address the server certificate is valid for (repeatable).
    #[arg(long = "tls-name", requires = "tls")]
    pub tls_names: Vec<String>,
    /// Another client user with its own key and inbox (repeatable).
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// Replace existing keys (every service must then use the new files).
    #[arg(long)]
    pub force: bool,
}

/// Runs an `attune auth` command; none of them talks to NATS.
pub fn run(global: &Global, cmd: AuthCommand) -> Result<ExitCode, CliError> {
    let AuthCommand::Init(args) = cmd;
    let mut opts = AuthOptions::new(global.namespace()?);
    opts.listen_host = args.listen;
    opts.port = args.port;
    opts.public_host = args.public_host;
    opts.store_dir = args.store_dir;
    opts.tls = args.tls;
    opts.tls_names = args.tls_names;
    opts.clients = args.clients;
    opts.force = args.force;
    let written = auth::init(&args.dir, &opts)?;
    match global.output {
        Output::Json => {
            // The manifest plus each user's permission lists, for operators who put the users
            // into a server configuration (or JWTs) of their own.
            let ns = written.namespace()?;
            let permissions: std::collections::BTreeMap<_, _> = written
                .users
                .iter()
                .map(|u| (u.name.clone(), u.role.permissions(&ns, &u.inbox_prefix)))
                .collect();
            let mut value = serde_json::to_value(&written).expect("the manifest serialises");
            value["permissions"] = serde_json::to_value(permissions).expect("lists serialise");
            output::json(&value);
        }
        Output::Text => {
            println!("wrote {}:", written.dir.display());
            for file in written.files() {
                println!("  {}", file.display());
            }
            println!();
            println!("users (role, public key):");
            for user in &written.users {
                println!("  {:<10} {:<9} {}", user.name, user.role, user.public_key);
            }
            println!();
            println!(
                "Start the server:  nats-server -c {}",
                written.server_config.display()
            );
            if let (Ok(registry), Ok(runner), Ok(client)) = (
                written.for_role(attune_nats::roles::Role::Registry),
                written.for_role(attune_nats::roles::Role::Runner),
                written.for_role(attune_nats::roles::Role::Client),
            ) {
                println!(
                    "Registry:          attune --context {} registry serve …",
                    registry.context.display()
                );
                println!(
                    "Runners:           attune --context {} runner start …",
                    runner.context.display()
                );
                println!(
                    "Clients:           attune --context {} invoke core.echo message=hi",
                    client.context.display()
                );
            }
            println!(
                "The seeds in {} are secrets: give each service only its own.",
                written.dir.join("keys").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
