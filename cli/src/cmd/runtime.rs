//! `attune runtime …`: runtimes, their versions, defaults and enablement.

use std::process::ExitCode;

use attune_nats::api::{
    Empty, NameRequest, RuntimeListReply, RuntimeReply, SetDefaultRequest, SetEnabledRequest,
};
use attune_nats::client::{Client, ClientError};
use attune_nats::wire::VerifyRequest;
use attune_nats::{RegistryOp, Runtime};
use clap::Subcommand;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Runtime commands.
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// List runtimes with their versions: default, enabled, available on some runner.
    List,
    /// Show one runtime's versions in detail.
    ///
    /// Example: attune runtime show python
    Show {
        /// Runtime name or alias.
        name: String,
    },
    /// Make a version the default (chosen for actions without a constraint). Immediate.
    ///
    /// Example: attune runtime default python 3.13
    Default {
        /// Runtime name or alias.
        name: String,
        /// A registered version.
        version: String,
    },
    /// Allow a version to be selected again. Immediate.
    ///
    /// Example: attune runtime enable python 3.13
    Enable {
        /// Runtime name or alias.
        name: String,
        /// A registered version.
        version: String,
    },
    /// Verify versions again on the live runners now, and show what each one found.
    ///
    /// Each runner re-runs the versions' verification (serving what now passes, no longer
    /// serving what now fails) and answers. Without arguments: every version of every runtime.
    ///
    /// Examples: attune runtime verify python 3.13
    ///           attune runtime verify --runner host-a-4711
    Verify {
        /// Runtime name or alias; all when left out.
        runtime: Option<String>,
        /// A registered version of that runtime; all of its versions when left out.
        version: Option<String>,
        /// Ask only this runner (its id, as `attune runner list` shows it).
        #[arg(long, value_name = "NAME")]
        runner: Option<String>,
        /// Seconds to wait for the runners' answers.
        #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
        wait: f64,
    },
    /// Take a version out of selection without unregistering it. Immediate.
    ///
    /// Example: attune runtime disable python 3.13
    Disable {
        /// Runtime name or alias.
        name: String,
        /// A registered version.
        version: String,
    },
}

/// Runs a runtime command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: RuntimeCommand,
) -> Result<ExitCode, CliError> {
    let result = match command {
        RuntimeCommand::List => list(global, client).await,
        RuntimeCommand::Show { name } => {
            let reply: Result<RuntimeReply, _> = client
                .api(RegistryOp::RuntimeGet, &NameRequest { name })
                .await;
            reply.map(|r| print_runtime(global, &r.runtime))
        }
        RuntimeCommand::Default { name, version } => {
            let reply: Result<RuntimeReply, _> = client
                .api(
                    RegistryOp::VersionSetDefault,
                    &SetDefaultRequest {
                        runtime: name,
                        version,
                    },
                )
                .await;
            reply.map(|r| print_runtime(global, &r.runtime))
        }
        RuntimeCommand::Enable { name, version } => {
            set_enabled(global, client, name, version, true).await
        }
        RuntimeCommand::Disable { name, version } => {
            set_enabled(global, client, name, version, false).await
        }
        RuntimeCommand::Verify {
            runtime,
            version,
            runner,
            wait,
        } => {
            let request = VerifyRequest {
                runtime,
                version,
                runner,
            };
            return verify(global, client, request, wait).await;
        }
    };
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `attune runtime verify`: asks the live runners to verify again and prints what each found.
async fn verify(
    global: &Global,
    client: &Client,
    request: VerifyRequest,
    wait: f64,
) -> Result<ExitCode, CliError> {
    let timeout = std::time::Duration::from_secs_f64(wait.clamp(0.0, 3600.0));
    let found = client.verify(&request, timeout).await?;
    if found.answers.is_empty() && found.missing.is_empty() {
        return Err(CliError::NoRunner {
            runner: request.runner,
        });
    }
    if global.output == Output::Json {
        output::json(&found.answers);
    } else {
        let mut table = Table::new(&["runner", "runtime", "version", "verified", "detail"]);
        for answer in &found.answers {
            if let Some(why) = &answer.error {
                table.row(vec![
                    answer.runner.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    why.clone(),
                ]);
            }
            for v in &answer.versions {
                let detail = match (&v.detected_version, &v.binary, &v.reason) {
                    (Some(d), Some(b), _) => format!("{d} at {b}"),
                    (_, _, Some(why)) => why.clone(),
                    _ => String::new(),
                };
                table.row(vec![
                    answer.runner.clone(),
                    v.runtime.clone(),
                    v.version.clone(),
                    yes(v.verified),
                    detail,
                ]);
            }
        }
        table.print("no answers");
    }
    if !found.missing.is_empty() {
        return Err(CliError::NoAnswer {
            runners: found.missing,
            timeout,
        });
    }
    if found.answers.iter().all(|a| a.error.is_some()) {
        let why = found.answers[0].error.clone().unwrap_or_default();
        return Err(CliError::VerifyRefused(why));
    }
    Ok(ExitCode::SUCCESS)
}

/// `attune runtime enable|disable`: allows or takes out one version, then shows the runtime.
async fn set_enabled(
    global: &Global,
    client: &Client,
    runtime: String,
    version: String,
    enabled: bool,
) -> Result<(), ClientError> {
    let reply: RuntimeReply = client
        .api(
            RegistryOp::VersionSetEnabled,
            &SetEnabledRequest {
                runtime,
                version,
                enabled,
            },
        )
        .await?;
    print_runtime(global, &reply.runtime);
    Ok(())
}

/// What the serving runners' interpreters report, a pre-release marked as one
/// (`3.13.0-rc1 (pre-release)`), or `-`.
fn detected(v: &attune_nats::model::RuntimeVersion) -> String {
    if v.detected_versions.is_empty() {
        return "-".into();
    }
    v.detected_versions
        .iter()
        .map(|d| match attune_nats::parse_version(d) {
            Ok(parsed) if !parsed.pre.is_empty() => format!("{d} (pre-release)"),
            _ => d.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `yes` or `no`, for table cells.
fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// `attune runtime list`: every version of every runtime.
async fn list(global: &Global, client: &Client) -> Result<(), ClientError> {
    let reply: RuntimeListReply = client.api(RegistryOp::RuntimeList, &Empty {}).await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let mut table = Table::new(&[
        "runtime",
        "version",
        "default",
        "enabled",
        "available",
        "detected",
        "verified at",
    ]);
    for rt in &reply.runtimes {
        for v in &rt.versions {
            table.row(vec![
                rt.name.clone(),
                v.version.clone(),
                yes(v.is_default),
                yes(v.enabled),
                yes(v.available),
                detected(v),
                v.verified_at.map_or("-".into(), attune_nats::time::format),
            ]);
        }
    }
    table.print("no runtimes registered (register the core pack)");
    Ok(())
}

/// Prints one runtime and its versions (or its JSON).
fn print_runtime(global: &Global, rt: &Runtime) {
    if global.output == Output::Json {
        output::json(rt);
        return;
    }
    println!("runtime: {} ({})", rt.name, rt.reference);
    if !rt.aliases.is_empty() {
        println!("aliases: {}", rt.aliases.join(", "));
    }
    if let Some(d) = &rt.description {
        println!("about:   {d}");
    }
    println!();
    let mut table = Table::new(&[
        "version",
        "default",
        "enabled",
        "available",
        "detected",
        "verified at",
        "interpreter",
    ]);
    for v in &rt.versions {
        let interp = v
            .execution_config
            .as_ref()
            .map(|c| c.interpreter.binary.clone())
            .unwrap_or_default();
        table.row(vec![
            v.version.clone(),
            yes(v.is_default),
            yes(v.enabled),
            yes(v.available),
            detected(v),
            v.verified_at.map_or("-".into(), attune_nats::time::format),
            interp,
        ]);
    }
    table.print("no versions");
}
