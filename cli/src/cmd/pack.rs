//! `attune pack …`: register, validate, list, show and remove packs.

use std::path::PathBuf;
use std::process::ExitCode;

use attune_nats::api::code;
use attune_nats::api::{
    Empty, PackGetReply, PackListReply, PackRegisterReply, PackRegisterRequest, PackRemoveReply,
    RefRequest, RuntimeListReply,
};
use attune_nats::client::{Client, ClientError};
use attune_nats::jetstream::open_pack_files;
use attune_nats::RegistryOp;
use attune_registry::pack::load_pack;
use clap::Subcommand;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Pack commands.
#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Validate a pack directory here, upload its files, and register it (an upsert).
    ///
    /// The pack is checked on this machine first, so problems are reported with local
    /// `file:line` positions; then its archive goes to the object store, so the registry and the
    /// runners need no shared disk. Uploading is the default because it works with any registry;
    /// --on-registry-host only works with a registry started with --allow-register-from.
    ///
    /// Example: attune pack register ./packs/examples
    Register {
        /// The pack directory.
        dir: PathBuf,
        /// Send the path instead of uploading: the directory is on the registry's host, inside a
        /// directory the registry was started with --allow-register-from.
        #[arg(long)]
        on_registry_host: bool,
    },
    /// Check a pack directory without registering it; prints every problem as file:line.
    ///
    /// Runtimes of registered packs are used when a registry answers; otherwise only the
    /// runtimes the pack itself defines are known.
    ///
    /// Example: attune pack validate ./packs/examples
    Validate {
        /// The pack directory.
        dir: PathBuf,
    },
    /// List registered packs.
    List,
    /// Show one pack with its runtimes and actions.
    ///
    /// Example: attune pack show examples
    Show {
        /// The pack ref.
        reference: String,
    },
    /// Remove a pack and everything it defines.
    ///
    /// Example: attune pack remove examples
    Remove {
        /// The pack ref.
        reference: String,
    },
}

/// Runs a pack command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: PackCommand,
) -> Result<ExitCode, CliError> {
    let result = match command {
        PackCommand::Register {
            dir,
            on_registry_host,
        } => register(global, client, dir, on_registry_host).await,
        PackCommand::Validate { dir } => validate(client, dir).await,
        PackCommand::List => list(global, client).await,
        PackCommand::Show { reference } => show(global, client, reference).await,
        PackCommand::Remove { reference } => {
            let reply: PackRemoveReply = client
                .api(RegistryOp::PackRemove, &RefRequest { reference })
                .await?;
            match global.output {
                Output::Json => output::json(&reply),
                Output::Text => println!("removed pack {}", reply.removed),
            }
            Ok(())
        }
    };
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the pack locally against the registered runtimes and prints its warnings; a pack with
/// problems is [`CliError::PackRejected`], listing each as `file:line`.
async fn check_locally(client: &Client, dir: &std::path::Path) -> Result<(), CliError> {
    let registered = match client
        .api::<_, RuntimeListReply>(RegistryOp::RuntimeList, &Empty {})
        .await
    {
        Ok(r) => r.runtimes,
        Err(ClientError::NoResponders(_)) => {
            eprintln!("note: no registry answered; checking against this pack's own runtimes only");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let pack = load_pack(dir, &registered)?;
    for w in &pack.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `attune pack validate`: the local checks only.
async fn validate(client: &Client, dir: PathBuf) -> Result<(), CliError> {
    check_locally(client, &dir).await?;
    println!("{} is a valid pack", dir.display());
    Ok(())
}

/// `attune pack register`: checks and uploads the pack (or sends its path), then registers it.
async fn register(
    global: &Global,
    client: &Client,
    dir: PathBuf,
    on_registry_host: bool,
) -> Result<(), CliError> {
    let request = if on_registry_host {
        let abs = dir.canonicalize().unwrap_or(dir.clone());
        PackRegisterRequest {
            path: Some(abs.display().to_string()),
            digest: None,
        }
    } else {
        check_locally(client, &dir).await?;
        let (bytes, digest) =
            attune_nats::archive::pack_dir(&dir).map_err(|source| CliError::PackArchive {
                dir: dir.clone(),
                source,
            })?;
        let js = client.jetstream().clone();
        let store = open_pack_files(&js, client.namespace())
            .await
            .map_err(CliError::PackStore)?;
        if store.info(&digest).await.is_err() {
            store
                .put(digest.as_str(), &mut bytes.as_slice())
                .await
                .map_err(CliError::PackUpload)?;
        }
        PackRegisterRequest {
            path: None,
            digest: Some(digest),
        }
    };
    let reply: PackRegisterReply = match client.api(RegistryOp::PackRegister, &request).await {
        Err(ClientError::Api(e)) if on_registry_host && e.error.code == code::FORBIDDEN => {
            return Err(CliError::PathRefused {
                dir,
                source: ClientError::Api(e),
            })
        }
        other => other?,
    };
    match global.output {
        Output::Json => output::json(&reply),
        Output::Text => {
            for w in &reply.warnings {
                eprintln!("warning: {w}");
            }
            let p = &reply.pack;
            println!(
                "registered pack {} {} ({} runtimes, {} actions, {} sensors, {} rules; {})",
                p.reference,
                p.version,
                p.runtimes.len(),
                p.actions.len(),
                p.sensors.len(),
                p.rules.len(),
                p.digest
            );
        }
    }
    Ok(())
}

/// `attune pack list`: a table of registered packs.
async fn list(global: &Global, client: &Client) -> Result<(), CliError> {
    let reply: PackListReply = client.api(RegistryOp::PackList, &Empty {}).await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let mut table = Table::new(&["pack", "version", "actions", "runtimes", "description"]);
    for p in &reply.packs {
        table.row(vec![
            p.reference.clone(),
            p.version.clone(),
            p.actions.len().to_string(),
            p.runtimes.join(","),
            p.description.clone().unwrap_or_default(),
        ]);
    }
    table.print("no packs registered (attune pack register DIR)");
    Ok(())
}

/// `attune pack show`: one pack with its runtimes and actions.
async fn show(global: &Global, client: &Client, reference: String) -> Result<(), CliError> {
    let reply: PackGetReply = client
        .api(RegistryOp::PackGet, &RefRequest { reference })
        .await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let p = &reply.pack;
    println!("pack:        {} {}", p.reference, p.version);
    if let Some(d) = &p.description {
        println!("description: {d}");
    }
    if let Some(a) = &p.author {
        println!("author:      {a}");
    }
    println!("digest:      {}", p.digest);
    if let Some(t) = &p.registered_at {
        println!("registered:  {t}");
    }
    if !reply.runtimes.is_empty() {
        println!();
        let mut table = Table::new(&["runtime", "versions"]);
        for r in &reply.runtimes {
            let versions: Vec<&str> = r.versions.iter().map(|v| v.version.as_str()).collect();
            table.row(vec![r.name.clone(), versions.join(", ")]);
        }
        table.print("");
    }
    println!();
    let mut table = Table::new(&["action", "runtime", "constraint", "description"]);
    for a in &reply.actions {
        table.row(vec![
            a.reference.clone(),
            a.runtime.clone(),
            a.runtime_version.clone().unwrap_or_else(|| "*".into()),
            a.description.clone().unwrap_or_default(),
        ]);
    }
    table.print("no actions");
    Ok(())
}
