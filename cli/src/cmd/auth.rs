//! `attune auth init`: the files a secured installation runs with. The generation itself is
//! [`attune_nats::auth`]; this file parses the options and prints what was written (never a
//! seed or a private key).

use std::path::PathBuf;
use std::process::ExitCode;

use attune_nats::auth::{self, AuthDir, AuthOptions, LeafSiteOptions};
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
    ///   attune auth init ./auth --listen 0.0.0.0 --leaf-port 7422 --js-domain hub
    Init(InitArgs),
    /// Write a leaf site for a hub: the files a remote host's own nats-server, runners and
    /// clients run with. The site's server links to the hub's leaf port with a key of its own;
    /// the hub's configuration gets a user for that key, limited to what the site's runner and
    /// client may do (reload the hub's nats-server afterwards). The site's users reach the
    /// hub's JetStream through its domain; their contexts say so.
    ///
    /// Examples:
    ///   attune auth leaf ./auth --site edge1 --out ./edge1
    ///   attune auth leaf ./auth --site edge1 --out ./edge1 --hub-host nats.example.com
    ///   attune auth leaf ./auth --site lab --out ./lab --runtime python --runtime shell
    Leaf(LeafArgs),
}

/// Where the nats-server a directory is written for listens, and its store.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The address nats-server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: String,
    /// The port nats-server listens on.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// The host name clients use to reach the server (the contexts' URL; with TLS also put in
    /// the server certificate). Default: the listen address, or 127.0.0.1 when listening on all
    /// addresses.
    #[arg(long)]
    pub public_host: Option<String>,
    /// nats-server's JetStream store directory (default: jetstream in the directory written).
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
}

/// Options of `attune auth leaf`.
#[derive(Debug, Args)]
pub struct LeafArgs {
    /// The hub's auth directory (written by `attune auth init --leaf-port`).
    pub hub_dir: PathBuf,
    /// The site's name, which is also its own JetStream domain.
    #[arg(long)]
    pub site: String,
    /// The directory to write the site's files into (created, readable by its owner only).
    #[arg(long)]
    pub out: PathBuf,
    /// The site's own nats-server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The host name the site's server reaches the hub's leaf port with (default: the host of
    /// the hub's client URL).
    #[arg(long)]
    pub hub_host: Option<String>,
    /// Send the site only the invocations of this runtime (repeatable; default: every
    /// runtime). Its runners should serve these runtimes only.
    #[arg(long = "runtime")]
    pub runtimes: Vec<String>,
    /// Replace a site of this name (new keys; the old site can no longer link).
    #[arg(long)]
    pub force: bool,
}

/// Options of `attune auth init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write into (created, readable by its owner only).
    pub dir: PathBuf,
    /// The nats-server the configuration is for.
    #[command(flatten)]
    pub server: ServerArgs,
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
    /// Accept leaf node links from sites (`attune auth leaf`) on this port.
    #[arg(long)]
    pub leaf_port: Option<u16>,
    /// The server's JetStream domain, which leaf sites name to reach it (default with
    /// --leaf-port: hub).
    #[arg(long)]
    pub js_domain: Option<String>,
}

/// Runs an `attune auth` command; none of them talks to NATS.
pub fn run(global: &Global, cmd: AuthCommand) -> Result<ExitCode, CliError> {
    match cmd {
        AuthCommand::Init(args) => init(global, args),
        AuthCommand::Leaf(args) => leaf(global, args),
    }
}

fn init(global: &Global, args: InitArgs) -> Result<ExitCode, CliError> {
    let mut opts = AuthOptions::new(global.namespace()?);
    opts.listen_host = args.server.listen;
    opts.port = args.server.port;
    opts.public_host = args.server.public_host;
    opts.store_dir = args.server.store_dir;
    opts.tls = args.tls;
    opts.tls_names = args.tls_names;
    opts.clients = args.clients;
    opts.force = args.force;
    opts.leaf_port = args.leaf_port;
    opts.js_domain = args.js_domain;
    let written = auth::init(&args.dir, &opts)?;
    match global.output {
        Output::Json => {
            // The manifest plus each user's permission lists, for operators who put the users
            // into a server configuration (or JWTs) of their own.
            print_json(&written)?;
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
            if let (Some(port), Some(domain)) = (written.leaf_port, &written.js_domain) {
                println!(
                    "Leaf sites:        attune auth leaf {} --site NAME --out SITE_DIR   (links to port {port}, JetStream domain {domain})",
                    written.dir.display()
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

/// The manifest plus each user's permission lists, for operators who put the users into a
/// server configuration (or JWTs) of their own.
fn print_json(written: &AuthDir) -> Result<(), CliError> {
    let permissions = written
        .users
        .iter()
        .map(|u| Ok((u.name.clone(), written.permissions(u)?)))
        .collect::<Result<std::collections::BTreeMap<_, _>, auth::AuthError>>()?;
    let mut value = serde_json::to_value(written).expect("the manifest serialises");
    value["permissions"] = serde_json::to_value(permissions).expect("lists serialise");
    output::json(&value);
    Ok(())
}

fn leaf(global: &Global, args: LeafArgs) -> Result<ExitCode, CliError> {
    let opts = LeafSiteOptions {
        site: args.site,
        listen_host: args.server.listen,
        port: args.server.port,
        public_host: args.server.public_host,
        store_dir: args.server.store_dir,
        hub_host: args.hub_host,
        force: args.force,
        runtimes: args.runtimes,
    };
    let (hub, site) = auth::add_leaf_site(&args.hub_dir, &args.out, &opts)?;
    match global.output {
        Output::Json => print_json(&site)?,
        Output::Text => {
            let link = site.hub.as_ref().expect("a site links to its hub");
            println!("wrote site {} in {}:", opts.site, site.dir.display());
            for file in site.files() {
                println!("  {}", file.display());
            }
            println!();
            println!(
                "The hub's configuration now lets this site link: reload it with\n  nats-server --signal reload   (or restart nats-server -c {})",
                hub.server_config.display()
            );
            println!(
                "Copy {} to the site's host, then there:",
                site.dir.display()
            );
            println!(
                "  nats-server -c {}      (links to {})",
                site.server_config.display(),
                link.url
            );
            if let Ok(runner) = site.for_role(attune_nats::roles::Role::Runner) {
                println!(
                    "  attune --context {} runner start …   (JetStream domain {})",
                    runner.context.display(),
                    link.domain
                );
            }
            println!(
                "{} and the server configuration hold secrets: keep them on the site's host.",
                site.dir.join("keys").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
