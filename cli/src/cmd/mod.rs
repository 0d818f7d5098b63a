//! The command groups, one file each, and the dispatch between them.

mod action;
mod auth;
mod event;
mod execution;
mod invoke;
mod pack;
mod registry;
mod resolve;
mod result;
mod rule;
mod runner;
mod runtime;
mod sensor;
mod trigger;
mod up;

use std::future::Future;
use std::process::ExitCode;

use attune_nats::client::Client;
use attune_nats::connect::Violations;
use clap::Subcommand;

use crate::error::CliError;
use crate::global::Global;

/// Every top-level command.
#[derive(Subcommand)]
pub enum Command {
    /// Run an action and print its result.
    Invoke(invoke::InvokeArgs),
    /// Show the result of an asynchronous invocation (`invoke --async`), or list results.
    Result(result::ResultArgs),
    /// Show which version and subject an action would use now, and why.
    Resolve(resolve::ResolveArgs),
    /// Register, validate, list, show and remove packs.
    #[command(subcommand)]
    Pack(pack::PackCommand),
    /// List and show runtimes; set defaults; enable and disable versions.
    #[command(subcommand)]
    Runtime(runtime::RuntimeCommand),
    /// List and show actions.
    #[command(subcommand)]
    Action(action::ActionCommand),
    /// Run the registry: packs in redb, published on NATS, the registry API and the router.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Run a runner: verify interpreters, serve invocations until SIGTERM, then drain.
    #[command(subcommand)]
    Runner(runner::RunnerCommand),
    /// Start everything locally: nats-server (if none answers), the registry, one runner.
    Up(up::UpArgs),
    /// List and show rules; enable and disable them.
    #[command(subcommand)]
    Rule(rule::RuleCommand),
    /// List and show sensors and where they run; enable and disable them.
    #[command(subcommand)]
    Sensor(sensor::SensorCommand),
    /// List and show trigger types and their payload schemas.
    #[command(subcommand)]
    Trigger(trigger::TriggerCommand),
    /// Events of triggers, which rules turn into jobs (`event publish`).
    #[command(subcommand)]
    Event(event::EventCommand),
    /// The history of executions: list and show what ran, where, and how it ended.
    #[command(subcommand)]
    Execution(execution::ExecutionCommand),
    /// Keys, permissions and contexts for a secured NATS server (`auth init`).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
}

/// Runs one command: `Ok` is the exit code of its outcome, `Err` the error that stopped it.
pub async fn run(global: Global, command: Command) -> Result<ExitCode, CliError> {
    // Long-running services (registry, runner, up) connect with retries on their own and are
    // dispatched here; everything else is a one-shot command.
    match command {
        Command::Runner(cmd) => runner::run(&global, cmd).await,
        Command::Registry(cmd) => registry::run(&global, cmd).await,
        Command::Up(args) => up::run(&global, args).await,
        // Writes files only; no connection.
        Command::Auth(cmd) => auth::run(&global, cmd),
        other => one_shot(global, other).await,
    }
}

/// Runs a one-shot command over a single connection that fails fast, stopped at once by a
/// permission violation the server reports (see [`watched`]).
async fn one_shot(global: Global, command: Command) -> Result<ExitCode, CliError> {
    let (client, mut violations) = connect(&global).await?;
    watched(&mut violations, async {
        match command {
            Command::Invoke(args) => invoke::run(&global, &client, args).await,
            Command::Resolve(args) => resolve::run(&global, &client, args).await,
            Command::Result(args) => result::run(&global, &client, args).await,
            Command::Pack(cmd) => pack::run(&global, &client, cmd).await,
            Command::Runtime(cmd) => runtime::run(&global, &client, cmd).await,
            Command::Action(cmd) => action::run(&global, &client, cmd).await,
            Command::Event(cmd) => event::run(&global, &client, cmd).await,
            Command::Execution(cmd) => execution::run(&global, &client, cmd).await,
            Command::Rule(cmd) => rule::run(&global, &client, cmd).await,
            Command::Sensor(cmd) => sensor::run(&global, &client, cmd).await,
            Command::Trigger(cmd) => trigger::run(&global, &client, cmd).await,
            Command::Runner(_) | Command::Registry(_) | Command::Up(_) | Command::Auth(_) => {
                unreachable!("long-running or offline: dispatched in run")
            }
        }
    })
    .await
}

/// Connects once for a one-shot command: a bad `--prefix` or option is a usage error, refused
/// credentials exit 77, no server exits 69. The violations go to [`watched`].
pub(crate) async fn connect(global: &Global) -> Result<(Client, Violations), CliError> {
    let ns = global.namespace()?;
    let conn = global.spec().connect().await?;
    Ok((
        Client::with_jetstream_domain(conn.client, ns, conn.jetstream_domain),
        conn.violations,
    ))
}

/// Runs a one-shot command's work until it ends or the server reports a permission violation,
/// whichever is first. The server drops a refused publish and only says so in an error, so
/// without this a command would wait for its reply until it timed out.
pub(crate) async fn watched<T>(
    violations: &mut Violations,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::select! {
        biased;
        done = work => done,
        violation = violations.first() => Err(violation.into()),
    }
}
