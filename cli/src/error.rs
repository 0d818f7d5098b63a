//! Why a command stopped: [`CliError`], the one mapping from errors to exit codes, and the
//! one-line report `main` prints for them.
//!
//! Commands return `Result<ExitCode, CliError>`. `Ok` carries the outcome a command reports on
//! purpose (an action that failed or timed out, a job that is not final yet); `Err` is an error
//! of the CLI itself, printed once by `main` as `error: …` with its causes.

use std::error::Error;
use std::path::PathBuf;

use attune_nats::client::ClientError;
use attune_nats::connect::{ConnectError, PermissionViolation};
use attune_nats::jetstream::OpenError;
use attune_nats::local::LocalServerError;
use attune_nats::subject::InvalidPrefix;
use attune_nats::wire::RejectCode;
use attune_registry::pack::PackErrors;
use attune_registry::RegistryError;
use attune_runner::RunnerError;

use crate::output::code;

/// An error that stopped a command; [`CliError::exit_code`] says how the process exits.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Asking the registry or a runner failed, or was refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `--prefix` is not usable in subjects.
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    /// The connection options are unusable, the server refused the credentials, or no server
    /// answered.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server refused something the command tried to publish or subscribe to.
    #[error(transparent)]
    PermissionViolation(#[from] PermissionViolation),
    /// A file or directory the command needs could not be used.
    #[error("{what} {}", path.display())]
    Io {
        /// What the command was doing, e.g. `creating`.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `--params` is JSON, but not an object.
    #[error("--params must be a JSON object")]
    ParamsNotObject,
    /// `--params` is not JSON.
    #[error("--params is not valid JSON")]
    ParamsJson(#[source] serde_json::Error),
    /// A pack directory failed the local checks; every problem is listed.
    #[error(transparent)]
    PackRejected(#[from] PackErrors),
    /// A pack directory could not be archived for upload.
    #[error("packing {}", dir.display())]
    PackArchive {
        /// The pack directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: attune_nats::archive::ArchiveError,
    },
    /// The object store for pack files could not be opened (no registry has created it yet).
    #[error(transparent)]
    PackStore(OpenError),
    /// `pack register --on-registry-host` was refused by the registry's path policy.
    #[error("the registry refuses to register {} by path; run `attune pack register {}` without --on-registry-host to upload it, or start the registry with --allow-register-from naming a directory that contains it", dir.display(), dir.display())]
    PathRefused {
        /// The pack directory given.
        dir: PathBuf,
        /// The registry's answer.
        #[source]
        source: ClientError,
    },
    /// A pack archive could not be uploaded.
    #[error("NATS: uploading the pack archive")]
    PackUpload(#[source] async_nats::jetstream::object_store::PutError),
    /// `attune result ID` found no record for the job.
    #[error("job {id} has no result yet (queued, unknown, or expired); `attune result {id} --wait` waits for it")]
    NoResult {
        /// The job id.
        id: String,
    },
    /// `attune runtime verify` found no live runner to ask (or not the one named).
    #[error("no live runner{} to verify on (start one with `attune runner start`; `attune runner list` shows the live ones)", .runner.as_ref().map(|r| format!(" named {r:?}")).unwrap_or_default())]
    NoRunner {
        /// The runner asked for with `--runner`.
        runner: Option<String>,
    },
    /// `attune runtime verify`: runners that did not answer in time (what came was printed).
    #[error("no answer within {timeout:?} from {}", .runners.join(", "))]
    NoAnswer {
        /// The runners that stayed silent.
        runners: Vec<String>,
        /// How long the command waited.
        timeout: std::time::Duration,
    },
    /// `attune runtime verify`: every runner that answered refused what was asked.
    #[error("{0}")]
    VerifyRefused(String),
    /// `attune registry serve` stopped with an error.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// `attune event show`: no event with that id is kept.
    #[error("no event \"{id}\" is kept in the events stream (events are kept 7 days; `attune event list` shows the newest)")]
    NoEvent {
        /// The id asked for.
        id: String,
    },
    /// `attune runner start` stopped with an error.
    /// No record of that execution is kept.
    #[error("no execution \"{id}\" is recorded (records are kept 7 days by default; `attune execution list` shows the newest)")]
    NoExecution {
        /// The id asked for.
        id: String,
    },
    /// An event refused before publishing (its payload against the trigger type's schema).
    #[error(transparent)]
    Event(#[from] attune_nats::events::EventError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// `attune up` found no NATS server and may not start one at that address.
    #[error("no NATS server answers at {server} and attune up only starts one on this machine (127.0.0.1 / localhost)")]
    NoLocalServer {
        /// The `--server` URL.
        server: String,
    },
    /// `attune up` could not start nats-server.
    #[error(transparent)]
    NatsServer(#[from] LocalServerError),
    /// An auth directory could not be written or read (`attune auth init`, `attune up --secure`).
    #[error(transparent)]
    Auth(#[from] attune_nats::auth::AuthError),
    /// Components `attune up` started failed; each is reported on its own line.
    #[error("{}", one_per_line(.0))]
    Components(Vec<ComponentError>),
}

/// How one component of `attune up` (the registry or the runner) failed.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// It returned an error, or its task panicked.
    #[error("{what}")]
    Failed {
        /// `runner`, `registry`, `runner task` or `registry task`.
        what: &'static str,
        /// The error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// It ended while it should still be serving.
    #[error("{what} stopped: it exited early (see the log above)")]
    ExitedEarly {
        /// The component.
        what: &'static str,
        /// Its error, when it returned one.
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    },
}

impl CliError {
    /// The process exit code for this error: the exit codes documented in docs/user-guide.md
    /// (2 usage error or rejected, 69 unavailable, 124 timed out, 75 not final yet, 1 failed,
    /// 77 not permitted by NATS).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => match e {
                ClientError::Refused(refusal) if refusal.code() == RejectCode::Unavailable => {
                    code::UNAVAILABLE
                }
                ClientError::NoResponders(_)
                | ClientError::NotPublished(_)
                | ClientError::JetStreamUnreachable { .. }
                | ClientError::Nats { .. }
                | ClientError::Enqueue(_) => code::UNAVAILABLE,
                ClientError::Timeout { .. } => code::TIMED_OUT,
                _ => code::USAGE,
            },
            CliError::Prefix(_) => code::USAGE,
            CliError::Connect(e) if e.is_not_authorized() => code::NO_PERMISSION,
            CliError::Connect(e) if e.is_config() => code::USAGE,
            CliError::Connect(_) => code::UNAVAILABLE,
            CliError::PermissionViolation(_) => code::NO_PERMISSION,
            CliError::Io { .. }
            | CliError::ParamsNotObject
            | CliError::ParamsJson(_)
            | CliError::PackRejected(_)
            | CliError::PackArchive { .. }
            | CliError::PathRefused { .. } => code::USAGE,
            CliError::PackStore(_) | CliError::PackUpload(_) => code::UNAVAILABLE,
            CliError::NoResult { .. } => code::PENDING,
            CliError::NoEvent { .. } | CliError::Event(_) | CliError::NoExecution { .. } => {
                code::USAGE
            }
            CliError::NoRunner { .. } => code::UNAVAILABLE,
            CliError::NoAnswer { .. } => code::TIMED_OUT,
            CliError::VerifyRefused(_) => code::USAGE,
            CliError::Registry(
                RegistryError::Rejected(_)
                | RegistryError::Discover(_)
                | RegistryError::BadRequest(_),
            ) => code::USAGE,
            CliError::Registry(_) => code::UNAVAILABLE,
            CliError::Runner(_) => code::UNAVAILABLE,
            CliError::NoLocalServer { .. } | CliError::NatsServer(_) => code::UNAVAILABLE,
            CliError::Components(_) => code::FAILED,
            // Existing keys, a bad user name, an unwritable directory: the user's to fix.
            CliError::Auth(_) => code::USAGE,
        }
    }
}

/// An error and its causes on one line, `outer: cause: cause`, in the manner of ripgrep.
///
/// A cause is left out when the text so far already contains it: many library errors print
/// their source in their own message and also return it from `source()`.
pub fn report(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Each failure with its causes, on lines of their own as `main` prints them.
fn one_per_line(failures: &[ComponentError]) -> String {
    failures
        .iter()
        .map(|f| report(f))
        .collect::<Vec<_>>()
        .join("\nerror: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(what: &'static str) -> CliError {
        CliError::Io {
            what,
            path: PathBuf::from("/x/y"),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        }
    }

    #[test]
    fn causes_follow_the_message() {
        assert_eq!(report(&io("creating")), "creating /x/y: denied");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let err = CliError::Connect(ConnectError::File {
            what: "credentials",
            path: PathBuf::from("/c"),
            source: std::io::Error::other("gone"),
        });
        assert_eq!(report(&err), "reading credentials /c: gone");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn every_failed_component_gets_its_own_line() {
        let err = CliError::Components(vec![
            ComponentError::Failed {
                what: "runner",
                source: "boom".into(),
            },
            ComponentError::ExitedEarly {
                what: "registry",
                source: None,
            },
        ]);
        assert_eq!(
            report(&err),
            "runner: boom\nerror: registry stopped: it exited early (see the log above)"
        );
        assert_eq!(err.exit_code(), code::FAILED);
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(
            CliError::Client(ClientError::NoResponders("s".into())).exit_code(),
            69
        );
        assert_eq!(
            CliError::Client(ClientError::Timeout {
                subject: "s".into(),
                timeout: std::time::Duration::from_secs(1),
            })
            .exit_code(),
            124
        );
        assert_eq!(
            CliError::Client(ClientError::Parameters("p".into())).exit_code(),
            2
        );
        assert_eq!(io("creating").exit_code(), 2);
        assert_eq!(CliError::NoResult { id: "j".into() }.exit_code(), 75);
        let violation = PermissionViolation::parse(r#"Permissions Violation for Publish to "a.b""#)
            .expect("the server's wording parses");
        assert_eq!(CliError::PermissionViolation(violation).exit_code(), 77);
    }
}
