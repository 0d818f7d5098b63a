//! Connecting to NATS the way the `nats` CLI does, for every Attune command, service, the bench
//! and the test kit.
//!
//! Operators already describe their NATS access with `nats` CLI contexts and `NATS_*` variables;
//! Attune reads the same files and honours the same rules, so one context works for both tools.
//! Keeping this in the contract crate means the CLI, the long-running services and the tests
//! connect in exactly one way.
//!
//! - [`NatsContext`]: one context file (`$XDG_CONFIG_HOME/nats/context/<name>.json`, the
//!   selected one named in `$XDG_CONFIG_HOME/nats/context.txt`; `~/.config` when
//!   `XDG_CONFIG_HOME` is unset), with the `nats` CLI's JSON field names.
//! - [`ConnectSpec`]: what a user asked for (flags, environment). [`ConnectSpec::resolve`] merges
//!   in the context — an explicit value wins over the context's — and takes `user:pass@` or
//!   `token@` out of server URLs (async-nats ignores them), giving a [`Resolved`] connection
//!   that [`Resolved::connect`] opens.
//! - [`Connection`]: the client plus [`Violations`], the permission violations the server
//!   reports while it runs, so a one-shot command can stop at once instead of timing out.
//! - [`JetStreamDomain`]: which JetStream holds Attune's buckets, streams and object stores (a
//!   runner on a leaf node whose own server has JetStream reaches the hub's through its
//!   domain); [`JetStreamDomain::context`] is the one way every component opens JetStream.
//!
//! Secrets (passwords, tokens, URL credentials) are held in [`Secret`] or stripped from URLs
//! before anything can print them: no `Debug`, `Display`, error or log line shows them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

/// The server used when neither a flag, the environment nor a context names one.
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// A password or token: printable by nobody. `Debug` shows `<redacted>` and there is no
/// `Display`; [`Secret::expose`] is the one way to read it, where it is handed to async-nats.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (the `nats` CLI writes `""` for an unset secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// One `nats` CLI context, with the field names the `nats` CLI reads and writes. An empty string
/// means "not set", as in the files the `nats` CLI writes; unknown fields are ignored.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsContext {
    /// Free text shown by `nats context ls`.
    pub description: String,
    /// Server URL(s), comma-separated.
    pub url: String,
    /// SOCKS5 proxy (not supported by Attune: a context that sets it is refused).
    pub socks_proxy: String,
    /// Token authentication.
    pub token: Secret,
    /// User name (with `password`).
    pub user: String,
    /// Password for `user`.
    pub password: Secret,
    /// Path of a credentials (`.creds`) file.
    pub creds: String,
    /// Path of an nkey seed file.
    pub nkey: String,
    /// Path of the TLS client certificate.
    pub cert: String,
    /// Path of the TLS client key.
    pub key: String,
    /// Path of the CA certificates to verify the server with.
    pub ca: String,
    /// An `nsc://` lookup (not supported by Attune: a context that sets it is refused).
    pub nsc: String,
    /// JetStream domain holding Attune's resources (`--js-domain` overrides it).
    pub jetstream_domain: String,
    /// JetStream API prefix (read; not applied by Attune).
    pub jetstream_api_prefix: String,
    /// JetStream event prefix (read; not applied by Attune).
    pub jetstream_event_prefix: String,
    /// Prefix of the reply inboxes, e.g. `_INBOX_client`: per-user inbox permissions rely on it.
    pub inbox_prefix: String,
    /// A user JWT given inline (not supported by Attune: a context that sets it is refused).
    pub user_jwt: String,
    /// A colour hint for the `nats` CLI; ignored.
    pub color_scheme: String,
    /// Do the TLS handshake before the server's INFO (servers with `handshake_first`).
    pub tls_first: bool,
}

impl fmt::Debug for NatsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsContext")
            .field("url", &redact_servers(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .field("tls_first", &self.tls_first)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("jetstream_domain", &self.jetstream_domain)
            .finish_non_exhaustive()
    }
}

/// A context that was found, with where it came from (for messages).
#[derive(Debug, Clone)]
pub struct LoadedContext {
    /// Its name: the file name without `.json`.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its settings.
    pub context: NatsContext,
}

/// Why a context could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A context was named but there is no configuration directory to look in.
    #[error("cannot find context {name:?}: neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigHome {
        /// The context asked for.
        name: String,
    },
    /// The name could escape the context directory or is empty.
    #[error("invalid context name {name:?} (a name has no `/` and no `..`; give a path ending in .json for a file)")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No file for this context.
    #[error("unknown context {name:?}: {} does not exist", path.display())]
    NotFound {
        /// The context asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("reading context {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a context.
    #[error("context {} is not valid JSON", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The context uses a feature Attune does not implement; connecting without it would be wrong.
    #[error("context {} sets {field:?}, which attune does not support", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
}

impl NatsContext {
    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`: where the `nats` CLI keeps its `nats/` directory.
    pub fn config_home() -> Option<PathBuf> {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".config"))
            })
    }

    /// The file of context `name` under `config_home` (`<config_home>/nats/context/<name>.json`).
    pub fn path(config_home: &Path, name: &str) -> Result<PathBuf, ContextError> {
        if name.is_empty() || name.contains("..") || name.contains('/') {
            return Err(ContextError::InvalidName {
                name: name.to_string(),
            });
        }
        Ok(config_home
            .join("nats")
            .join("context")
            .join(format!("{name}.json")))
    }

    /// The file naming the selected context (`<config_home>/nats/context.txt`).
    pub fn selection_file(config_home: &Path) -> PathBuf {
        config_home.join("nats").join("context.txt")
    }

    /// The selected context's name, `None` when no context is selected (no file, or empty).
    pub fn selected(config_home: &Path) -> Result<Option<String>, ContextError> {
        let file = Self::selection_file(config_home);
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(Some(text.trim().to_string()).filter(|n| !n.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ContextError::Read { path: file, source }),
        }
    }

    /// Reads one context file.
    pub fn read(path: &Path) -> Result<NatsContext, ContextError> {
        let text = std::fs::read(path).map_err(|source| ContextError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let context: NatsContext =
            serde_json::from_slice(&text).map_err(|source| ContextError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let unsupported = [
            ("nsc", &context.nsc),
            ("socks_proxy", &context.socks_proxy),
            ("user_jwt", &context.user_jwt),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, v)| !v.is_empty()) {
            return Err(ContextError::Unsupported {
                path: path.to_path_buf(),
                field,
            });
        }
        Ok(context)
    }

    /// Writes this context to `path` (mode 0600: it may hold secrets), creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(self).expect("a context always serialises");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&json)
    }

    /// Finds the context to use, as the `nats` CLI does: `selector` is a context NAME, or a PATH
    /// to a `.json` file (it ends in `.json` or contains `/`); without a selector, the context
    /// named in `context.txt`, if any. `config_home` is normally [`NatsContext::config_home`].
    pub fn find(
        selector: Option<&str>,
        config_home: Option<&Path>,
    ) -> Result<Option<LoadedContext>, ContextError> {
        let name = match selector.filter(|s| !s.is_empty()) {
            Some(s) if s.ends_with(".json") || s.contains('/') => {
                let path = expand_home(Path::new(s));
                let name = path
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !path.is_file() {
                    return Err(ContextError::NotFound { name, path });
                }
                let context = Self::read(&path)?;
                return Ok(Some(LoadedContext {
                    name,
                    path,
                    context,
                }));
            }
            Some(name) => name.to_string(),
            None => match config_home {
                Some(home) => match Self::selected(home)? {
                    Some(name) => name,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let home = config_home.ok_or_else(|| ContextError::NoConfigHome { name: name.clone() })?;
        let path = Self::path(home, &name)?;
        if !path.is_file() {
            return Err(ContextError::NotFound { name, path });
        }
        let context = Self::read(&path)?;
        Ok(Some(LoadedContext {
            name,
            path,
            context,
        }))
    }
}

/// What the user asked for: flags and environment, before the context is merged in. Fields left
/// `None` (or empty) are taken from the context; see [`ConnectSpec::resolve`].
#[derive(Clone, Default)]
pub struct ConnectSpec {
    /// Server URLs; may hold `user:pass@` or `token@`. Empty: the context's, else [`DEFAULT_SERVER`].
    pub servers: Vec<String>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// Credentials (`.creds`) file.
    pub creds: Option<PathBuf>,
    /// Nkey seed file.
    pub nkey: Option<PathBuf>,
    /// TLS client certificate (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// TLS client key (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// CA certificates to verify the server with.
    pub tls_ca: Option<PathBuf>,
    /// TLS handshake before the server's INFO.
    pub tls_first: bool,
    /// How long one connection attempt may take (async-nats' default when `None`).
    pub connect_timeout: Option<Duration>,
    /// Prefix of reply inboxes.
    pub inbox_prefix: Option<String>,
    /// A context NAME or PATH; `None`: the selected context, if any.
    pub context: Option<String>,
    /// The connection name the server shows (`attune`, ...).
    pub name: Option<String>,
    /// JetStream domain of Attune's resources; `None`: the context's, else the account's own.
    pub jetstream_domain: Option<String>,
}

impl fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("servers", &redact_servers(&self.servers.join(",")))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_ca", &self.tls_ca)
            .field("tls_first", &self.tls_first)
            .field("connect_timeout", &self.connect_timeout)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("context", &self.context)
            .field("name", &self.name)
            .field("jetstream_domain", &self.jetstream_domain)
            .finish()
    }
}

/// Which JetStream holds Attune's KV buckets, streams and object stores.
///
/// Normally the account's own (no domain). A runner on a leaf node whose local nats-server runs
/// its own JetStream would otherwise find none of the registry's resources there: naming the
/// hub's domain sends its JetStream API calls (`$JS.<domain>.API.>`) across the leaf link to
/// the hub. Every component makes its JetStream context with [`JetStreamDomain::context`], so
/// the choice cannot be forgotten in one place and honoured in another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JetStreamDomain(Option<String>);

impl JetStreamDomain {
    /// The account's own JetStream: no domain.
    pub fn local() -> Self {
        JetStreamDomain(None)
    }

    /// Domain `name`, checked: a domain is one subject token (no `.`, `*`, `>` or whitespace),
    /// since it becomes part of every API subject. An empty name is the account's own.
    pub fn named(name: &str) -> Result<Self, ConnectError> {
        let name = name.trim();
        if name.is_empty() {
            return Ok(Self::local());
        }
        if name
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(ConnectError::BadDomain {
                domain: name.to_string(),
            });
        }
        Ok(JetStreamDomain(Some(name.to_string())))
    }

    /// The domain's name, `None` for the account's own JetStream.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The prefix of this JetStream's API subjects: `$JS.API`, or `$JS.<domain>.API`.
    pub fn api_prefix(&self) -> String {
        match &self.0 {
            None => crate::jetstream::JS_API.to_string(),
            Some(d) => format!("$JS.{d}.API"),
        }
    }

    /// The JetStream context for `client` in this domain: the one way Attune opens JetStream.
    pub fn context(&self, client: async_nats::Client) -> async_nats::jetstream::Context {
        match &self.0 {
            None => async_nats::jetstream::new(client),
            Some(d) => async_nats::jetstream::with_domain(client, d),
        }
    }
}

/// How to authenticate, once everything is merged: exactly one way, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// User name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// A credentials file (user JWT and nkey seed).
    Creds(PathBuf),
    /// An nkey seed file.
    NKey(PathBuf),
}

impl Auth {
    /// A word for logs and messages that reveals nothing secret.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::UserPassword { .. } => "user and password",
            Auth::Token(_) => "token",
            Auth::Creds(_) => "credentials file",
            Auth::NKey(_) => "nkey",
        }
    }
}

/// A connection description with the context merged in and URL credentials taken out: what
/// [`Resolved::connect`] uses. Its server list is safe to print.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Server URLs without credentials.
    servers: Vec<String>,
    /// The one way to authenticate.
    auth: Auth,
    /// TLS client certificate and key.
    tls_client: Option<(PathBuf, PathBuf)>,
    /// CA certificates.
    tls_ca: Option<PathBuf>,
    /// TLS handshake first.
    tls_first: bool,
    /// Connection attempt timeout.
    connect_timeout: Option<Duration>,
    /// Reply inbox prefix.
    inbox_prefix: Option<String>,
    /// Connection name.
    name: Option<String>,
    /// The context used, by name, for messages.
    context: Option<String>,
    /// Where Attune's JetStream resources are.
    jetstream_domain: JetStreamDomain,
}

/// Why a connection could not be made: the options are unusable, the server refused the
/// credentials, or no server answered. [`ConnectError::is_not_authorized`] and
/// [`ConnectError::is_config`] tell them apart for exit codes and retry decisions.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The context could not be used.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A server URL does not parse (shown with its credentials replaced by `***`).
    #[error("invalid NATS server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The JetStream domain is not one subject token.
    #[error("invalid JetStream domain {domain:?}: a domain is one word without `.`, `*`, `>` or spaces (--js-domain, ATTUNE_JS_DOMAIN or the context's jetstream_domain)")]
    BadDomain {
        /// The domain given.
        domain: String,
    },
    /// A password was given without any user name.
    #[error("a password needs a user name (--user, NATS_USER, the context's `user`, or user:password@ in the URL)")]
    PasswordWithoutUser,
    /// Only one half of the TLS client certificate pair was given.
    #[error("the TLS client certificate and key go together: give both --tlscert and --tlskey")]
    TlsPair,
    /// A file named by the options could not be read.
    #[error("reading {what} {}", path.display())]
    File {
        /// `credentials`, `nkey seed`, `TLS certificate`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The nkey file holds no valid seed (its content is never shown).
    #[error("{} holds no valid nkey seed", path.display())]
    NKeySeed {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nkeys::error::Error,
    },
    /// The server refused the credentials (authorization violation) or they could not be used.
    #[error("NATS at {servers} refused the connection{}: not authorized (check the user, password, token, creds or nkey)", context_note(.context))]
    NotAuthorized {
        /// The servers tried (no credentials).
        servers: String,
        /// The context used, if any.
        context: Option<String>,
        /// async-nats' error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The TLS handshake failed: the server's certificate is not trusted, or it wants a client
    /// certificate, or one side wants TLS and the other does not.
    #[error(
        "TLS with NATS at {servers} failed{}: a server with a private CA needs --tlsca, one that asks for client certificates needs --tlscert and --tlskey (or a context that has them)",
        context_note(.context)
    )]
    Tls {
        /// The servers tried (no credentials).
        servers: String,
        /// The context used, if any.
        context: Option<String>,
        /// async-nats' error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// No server answered, or the connection failed otherwise (DNS, timeout).
    #[error(
        "cannot connect to NATS at {servers} (is nats-server running? `attune up` starts one)"
    )]
    Unreachable {
        /// The servers tried (no credentials).
        servers: String,
        /// async-nats' error.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Whether a failed connect was the TLS handshake. async-nats reports an untrusted certificate
/// as an I/O error, so the kind alone does not tell; rustls' messages name certificates.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    if e.kind() == async_nats::ConnectErrorKind::Tls {
        return true;
    }
    let text = e.to_string().to_ascii_lowercase();
    text.contains("certificate") || text.contains("tls")
}

/// ` (context NAME)` for messages, or nothing.
fn context_note(context: &Option<String>) -> String {
    context
        .as_ref()
        .map(|c| format!(" (context {c:?})"))
        .unwrap_or_default()
}

impl ConnectError {
    /// The server refused the credentials: retrying will not help, exit 77.
    pub fn is_not_authorized(&self) -> bool {
        matches!(self, ConnectError::NotAuthorized { .. })
    }

    /// The options themselves are unusable (context, URL, files): a usage error.
    pub fn is_config(&self) -> bool {
        !matches!(
            self,
            ConnectError::NotAuthorized { .. }
                | ConnectError::Tls { .. }
                | ConnectError::Unreachable { .. }
        )
    }
}

/// A comma-separated server list as a list: trimmed, empty entries dropped.
pub fn parse_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A timeout as the `nats` CLI's `NATS_TIMEOUT` writes it: `5s`, `500ms`, `2m`, or plain seconds
/// (`5`, `2.5`). For clap's `value_parser`.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 5s, 500ms, 2m, or seconds)"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// `~/x` as `$HOME/x`: context files written by hand often use it.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// A context's path field as a path, `None` when empty.
fn context_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| expand_home(Path::new(value)))
}

/// A comma-separated server list with any `user:pass@` / `token@` replaced by `***@`.
pub fn redact_servers(list: &str) -> String {
    list.split(',')
        .map(|s| {
            let (scheme, rest) = s.split_once("://").map_or(("", s), |(a, b)| (a, b));
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let sep = if scheme.is_empty() { "" } else { "://" };
                    format!("{scheme}{sep}***@{}", &rest[at + 1..])
                }
                None => s.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Credentials found in a URL: a user (or a token, when no password follows) and a password.
type UrlCredentials = (String, Option<Secret>);

/// One server URL without its credentials, and the credentials it held.
fn split_credentials(server: &str) -> Result<(String, Option<UrlCredentials>), ConnectError> {
    let with_scheme = if server.contains("://") {
        server.to_string()
    } else {
        format!("nats://{server}")
    };
    let bad = |reason: String| ConnectError::BadUrl {
        url: redact_servers(server),
        reason,
    };
    let mut url = url::Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if url.username().is_empty() && url.password().is_none() {
        return Ok((server.to_string(), None));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(url.username());
    let password = url.password().map(|p| Secret::new(decode(p)));
    url.set_username("")
        .and_then(|()| url.set_password(None))
        .map_err(|()| bad("credentials cannot be removed from it".into()))?;
    Ok((url.to_string(), Some((user, password))))
}

/// Servers without credentials, and the first credentials any of them held.
fn strip_all(servers: &[String]) -> Result<(Vec<String>, Option<UrlCredentials>), ConnectError> {
    let mut clean = Vec::with_capacity(servers.len());
    let mut found = None;
    for s in servers {
        let (url, creds) = split_credentials(s)?;
        clean.push(url);
        if found.is_none() {
            found = creds;
        }
    }
    Ok((clean, found))
}

impl ConnectSpec {
    /// Sets `user` and `password` the way the `nats` CLI reads `--user`/`--password`: a user
    /// given without a password is a token.
    pub fn set_user_or_token(&mut self, user: Option<String>, password: Option<Secret>) {
        match (user, password) {
            (Some(user), None) => self.token = Some(Secret::new(user)),
            (user, password) => {
                self.user = user;
                self.password = password;
            }
        }
    }

    /// Merges in the context (named, or the selected one) from the `nats` CLI's configuration
    /// directory ([`NatsContext::config_home`]).
    pub fn resolve(&self) -> Result<Resolved, ConnectError> {
        self.resolve_in(NatsContext::config_home().as_deref())
    }

    /// [`ConnectSpec::resolve`] with contexts looked up under `config_home`.
    ///
    /// Precedence, highest first: explicit credentials (user, token, creds, nkey); credentials in
    /// an explicit server URL; the context's credentials (an explicit password still replaces
    /// the context's); credentials in the context's URL. Explicit credentials replace all of the
    /// context's, so `--creds` with a context that has a user connects with the creds. Every
    /// other field is the explicit value when given, else the context's.
    pub fn resolve_in(&self, config_home: Option<&Path>) -> Result<Resolved, ConnectError> {
        let loaded = NatsContext::find(self.context.as_deref(), config_home)?;
        let ctx = loaded
            .as_ref()
            .map(|l| l.context.clone())
            .unwrap_or_default();
        if let Some(l) = &loaded {
            debug!(context = %l.name, path = %l.path.display(), "using nats context");
        }
        let jetstream_domain = JetStreamDomain::named(
            self.jetstream_domain
                .as_deref()
                .unwrap_or(&ctx.jetstream_domain),
        )?;

        let explicit_servers = !self.servers.is_empty();
        let servers = if explicit_servers {
            self.servers.clone()
        } else if !ctx.url.is_empty() {
            parse_servers(&ctx.url)
        } else {
            vec![DEFAULT_SERVER.to_string()]
        };
        let (servers, url_creds) = strip_all(&servers)?;

        let explicit_auth = self.user.is_some()
            || self.token.is_some()
            || self.creds.is_some()
            || self.nkey.is_some();
        let context_auth = !ctx.user.is_empty()
            || !ctx.token.is_empty()
            || !ctx.creds.is_empty()
            || !ctx.nkey.is_empty();
        let auth = if explicit_auth {
            pick_auth(
                self.user.clone(),
                self.password.clone(),
                self.token.clone(),
                self.creds.clone(),
                self.nkey.clone(),
            )?
        } else if let Some(creds) = url_creds.filter(|_| explicit_servers || !context_auth) {
            let (user, password) = creds;
            match self.password.clone().or(password) {
                Some(password) => Auth::UserPassword { user, password },
                None => Auth::Token(Secret::new(user)),
            }
        } else {
            pick_auth(
                Some(ctx.user.clone()).filter(|u| !u.is_empty()),
                self.password
                    .clone()
                    .or_else(|| Some(ctx.password.clone()).filter(|p| !p.is_empty())),
                Some(ctx.token.clone()).filter(|t| !t.is_empty()),
                context_path(&ctx.creds),
                context_path(&ctx.nkey),
            )?
        };

        let tls_cert = self.tls_cert.clone().or_else(|| context_path(&ctx.cert));
        let tls_key = self.tls_key.clone().or_else(|| context_path(&ctx.key));
        let tls_client = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConnectError::TlsPair),
        };
        Ok(Resolved {
            servers,
            auth,
            tls_client,
            tls_ca: self.tls_ca.clone().or_else(|| context_path(&ctx.ca)),
            tls_first: self.tls_first || ctx.tls_first,
            connect_timeout: self.connect_timeout,
            inbox_prefix: self
                .inbox_prefix
                .clone()
                .or_else(|| Some(ctx.inbox_prefix.clone()).filter(|p| !p.is_empty())),
            name: self.name.clone(),
            context: loaded.map(|l| l.name),
            jetstream_domain,
        })
    }

    /// Resolves and connects: see [`Resolved::connect`].
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        self.resolve()?.connect().await
    }
}

/// One way to authenticate from one source, in the `nats` CLI's order: user, creds, nkey, token.
fn pick_auth(
    user: Option<String>,
    password: Option<Secret>,
    token: Option<Secret>,
    creds: Option<PathBuf>,
    nkey: Option<PathBuf>,
) -> Result<Auth, ConnectError> {
    Ok(match (user, password) {
        (Some(user), password) => Auth::UserPassword {
            user,
            password: password.unwrap_or_default(),
        },
        (None, Some(_)) if token.is_none() && creds.is_none() && nkey.is_none() => {
            return Err(ConnectError::PasswordWithoutUser)
        }
        (None, _) => match (creds, nkey, token) {
            (Some(c), _, _) => Auth::Creds(c),
            (None, Some(n), _) => Auth::NKey(n),
            (None, None, Some(t)) => Auth::Token(t),
            (None, None, None) => Auth::None,
        },
    })
}

/// The seed in an nkey seed file: the line that starts with `S` (a seed), else the whole text.
fn read_seed(path: &Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectError::File {
        what: "nkey seed",
        path: path.to_path_buf(),
        source,
    })?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && !l.contains(' '))
        .unwrap_or(text.trim())
        .to_string();
    nkeys::KeyPair::from_seed(&seed).map_err(|source| ConnectError::NKeySeed {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(seed)
}

/// Fails early, naming the file, when a TLS file cannot be read (async-nats would only say "TLS").
fn check_readable(what: &'static str, path: &Path) -> Result<(), ConnectError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConnectError::File {
            what,
            path: path.to_path_buf(),
            source,
        })
}

impl Resolved {
    /// The servers, without credentials.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The servers as one comma-separated string, safe to print.
    pub fn server_list(&self) -> String {
        self.servers.join(",")
    }

    /// How it authenticates.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The reply inbox prefix, when one is set.
    pub fn inbox_prefix(&self) -> Option<&str> {
        self.inbox_prefix.as_deref()
    }

    /// The context used, by name.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// Where Attune's JetStream resources are (`--js-domain`, else the context's).
    pub fn jetstream_domain(&self) -> &JetStreamDomain {
        &self.jetstream_domain
    }

    /// The async-nats options: authentication, TLS (any TLS option requires TLS), timeout,
    /// inbox prefix and name. Reads the creds and nkey files.
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        opts = match &self.auth {
            Auth::None => opts,
            Auth::UserPassword { user, password } => {
                opts.user_and_password(user.clone(), password.expose().to_string())
            }
            Auth::Token(token) => opts.token(token.expose().to_string()),
            Auth::Creds(path) => {
                opts.credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::File {
                        what: "credentials",
                        path: path.clone(),
                        source,
                    })?
            }
            Auth::NKey(path) => opts.nkey(read_seed(path)?),
        };
        let mut tls = false;
        if let Some((cert, key)) = &self.tls_client {
            check_readable("TLS certificate", cert)?;
            check_readable("TLS key", key)?;
            opts = opts.add_client_certificate(cert.clone(), key.clone());
            tls = true;
        }
        if let Some(ca) = &self.tls_ca {
            check_readable("TLS CA", ca)?;
            opts = opts.add_root_certificates(ca.clone());
            tls = true;
        }
        if self.tls_first {
            opts = opts.tls_first();
            tls = true;
        }
        if tls {
            opts = opts.require_tls(true);
        }
        if let Some(t) = self.connect_timeout {
            opts = opts.connection_timeout(t);
        }
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        Ok(opts)
    }

    /// Connects once to the server list (async-nats tries each server in turn). The returned
    /// [`Connection`] reports the permission violations the server sends while it runs.
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        let opts = self.options().await?.event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event
                {
                    if let Some(v) = PermissionViolation::parse(&text) {
                        warn!(operation = %v.operation, subject = %v.subject, "NATS permissions violation");
                        tx.send_replace(Some(v));
                    }
                }
            }
        });
        debug!(servers = %self.server_list(), auth = self.auth.kind(), context = ?self.context, "connecting to NATS");
        match opts.connect(self.servers.as_slice()).await {
            Ok(client) => Ok(Connection {
                client,
                violations: Violations(rx),
                jetstream_domain: self.jetstream_domain.clone(),
            }),
            Err(source) => Err(match source.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => ConnectError::NotAuthorized {
                    servers: self.server_list(),
                    context: self.context.clone(),
                    source,
                },
                _ if is_tls_failure(&source) => ConnectError::Tls {
                    servers: self.server_list(),
                    context: self.context.clone(),
                    source,
                },
                _ => ConnectError::Unreachable {
                    servers: self.server_list(),
                    source,
                },
            }),
        }
    }
}

/// An open connection and the permission violations its server reports.
pub struct Connection {
    /// The client.
    pub client: async_nats::Client,
    /// Permission violations reported while it runs.
    pub violations: Violations,
    /// Where Attune's JetStream resources are, for [`JetStreamDomain::context`].
    pub jetstream_domain: JetStreamDomain,
}

/// The permission violations a server reported on one connection. A server drops a message the
/// user may not publish (and a subscription it may not make) and says so only in an `-ERR`; a
/// command waiting for a reply would otherwise wait for its timeout.
pub struct Violations(watch::Receiver<Option<PermissionViolation>>);

impl Violations {
    /// Resolves with the first violation reported; never, if none is.
    pub async fn first(&mut self) -> PermissionViolation {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("waited for Some"),
            Err(_) => std::future::pending().await,
        }
    }
}

/// The server refused to let this user publish to or subscribe on a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NATS refused: permissions violation for {operation} \"{subject}\" (this user may not do that; check its permissions or use another --context)")]
pub struct PermissionViolation {
    /// What was refused, as the server words it: `Publish to`, `Subscription to`, ...
    pub operation: String,
    /// The subject.
    pub subject: String,
}

impl PermissionViolation {
    /// Reads the server's text, e.g. `Permissions Violation for Publish to "a.b"`; `None` for
    /// any other error.
    pub fn parse(text: &str) -> Option<PermissionViolation> {
        let rest = text
            .trim()
            .trim_matches('\'')
            .strip_prefix("Permissions Violation for ")?;
        let (operation, quoted) = rest.split_once('"')?;
        let (subject, _) = quoted.split_once('"')?;
        Some(PermissionViolation {
            operation: operation.trim().to_string(),
            subject: subject.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn spec(servers: &[&str]) -> ConnectSpec {
        ConnectSpec {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..ConnectSpec::default()
        }
    }

    fn user_password(user: &str, password: &str) -> Auth {
        Auth::UserPassword {
            user: user.into(),
            password: Secret::new(password),
        }
    }

    #[test]
    fn reads_the_nats_cli_field_names() {
        let home = tempfile::tempdir().unwrap();
        write(
            &home.path().join("nats/context/prod.json"),
            r#"{"description":"d","url":"nats://a:1,nats://b:2","token":"","user":"u",
               "password":"p","creds":"","nkey":"","cert":"/c","key":"/k","ca":"/ca","nsc":"",
               "jetstream_domain":"","jetstream_api_prefix":"","jetstream_event_prefix":"",
               "inbox_prefix":"_INBOX_u","user_jwt":"","color_scheme":"","tls_first":true,
               "socks_proxy":"","windows_cert_store":""}"#,
        );
        let loaded = NatsContext::find(Some("prod"), Some(home.path()))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.name, "prod");
        let c = loaded.context;
        assert_eq!(
            (c.url.as_str(), c.user.as_str()),
            ("nats://a:1,nats://b:2", "u")
        );
        assert_eq!(c.password.expose(), "p");
        assert_eq!(
            (c.cert.as_str(), c.key.as_str(), c.ca.as_str()),
            ("/c", "/k", "/ca")
        );
        assert_eq!(c.inbox_prefix, "_INBOX_u");
        assert!(c.tls_first);
    }

    #[test]
    fn the_selected_context_applies_when_none_is_named() {
        let home = tempfile::tempdir().unwrap();
        write(
            &home.path().join("nats/context/dev.json"),
            r#"{"url":"nats://dev:4222","inbox_prefix":"_INBOX_dev"}"#,
        );
        assert!(NatsContext::find(None, Some(home.path()))
            .unwrap()
            .is_none());
        write(&home.path().join("nats/context.txt"), "dev\n");
        let r = ConnectSpec::default()
            .resolve_in(Some(home.path()))
            .unwrap();
        assert_eq!(r.servers(), ["nats://dev:4222"]);
        assert_eq!(r.inbox_prefix(), Some("_INBOX_dev"));
        assert_eq!(r.context(), Some("dev"));
    }

    #[test]
    fn a_context_is_a_name_or_a_path() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("elsewhere/role.json");
        write(&file, r#"{"url":"nats://role:1"}"#);
        let by_path = NatsContext::find(file.to_str(), None).unwrap().unwrap();
        assert_eq!(
            (by_path.name.as_str(), by_path.context.url.as_str()),
            ("role", "nats://role:1")
        );
        for bad in ["../x", "a/../b"] {
            assert!(matches!(
                NatsContext::find(Some(bad), Some(home.path())),
                Err(ContextError::InvalidName { .. }) | Err(ContextError::NotFound { .. })
            ));
        }
        assert!(matches!(
            NatsContext::find(Some("missing"), Some(home.path())),
            Err(ContextError::NotFound { .. })
        ));
        write(&home.path().join("nats/context.txt"), "gone");
        assert!(matches!(
            ConnectSpec::default().resolve_in(Some(home.path())),
            Err(ConnectError::Context(ContextError::NotFound { .. }))
        ));
    }

    #[test]
    fn refuses_context_features_it_cannot_honour() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("x.json");
        write(&file, r#"{"nsc":"nsc://op/acct/user"}"#);
        assert!(matches!(
            NatsContext::read(&file),
            Err(ContextError::Unsupported { field: "nsc", .. })
        ));
    }

    #[test]
    fn a_written_context_reads_back_the_same() {
        let home = tempfile::tempdir().unwrap();
        let ctx = NatsContext {
            url: "nats://h:4222".into(),
            nkey: "/keys/runner.nk".into(),
            inbox_prefix: "_INBOX_runner".into(),
            ..NatsContext::default()
        };
        let path = NatsContext::path(home.path(), "runner").unwrap();
        ctx.write(&path).unwrap();
        assert_eq!(NatsContext::read(&path).unwrap(), ctx);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn explicit_values_override_the_context() {
        let home = tempfile::tempdir().unwrap();
        write(
            &home.path().join("nats/context/c.json"),
            r#"{"url":"nats://ctx:1","user":"ctxuser","password":"ctxpw","ca":"/ctx-ca",
               "inbox_prefix":"_INBOX_ctx"}"#,
        );
        let mut s = spec(&["nats://flag:2"]);
        s.context = Some("c".into());
        s.password = Some(Secret::new("flagpw"));
        s.tls_ca = Some("/flag-ca".into());
        let r = s.resolve_in(Some(home.path())).unwrap();
        assert_eq!(r.servers(), ["nats://flag:2"]);
        assert_eq!(r.auth(), &user_password("ctxuser", "flagpw"));
        assert_eq!(r.tls_ca.as_deref(), Some(Path::new("/flag-ca")));
        assert_eq!(r.inbox_prefix(), Some("_INBOX_ctx"));

        // Explicit credentials of another kind replace the context's user entirely.
        let mut s = spec(&[]);
        s.context = Some("c".into());
        s.creds = Some("/my.creds".into());
        let r = s.resolve_in(Some(home.path())).unwrap();
        assert_eq!(r.servers(), ["nats://ctx:1"]);
        assert_eq!(r.auth(), &Auth::Creds("/my.creds".into()));
    }

    #[test]
    fn the_jetstream_domain_comes_from_the_flag_else_the_context() {
        let home = tempfile::tempdir().unwrap();
        write(
            &home.path().join("nats/context/leaf.json"),
            r#"{"url":"nats://leaf:4222","jetstream_domain":"hub"}"#,
        );
        let mut s = spec(&[]);
        s.context = Some("leaf".into());
        let r = s.resolve_in(Some(home.path())).unwrap();
        assert_eq!(r.jetstream_domain().name(), Some("hub"));
        assert_eq!(r.jetstream_domain().api_prefix(), "$JS.hub.API");
        s.jetstream_domain = Some("other".into());
        let r = s.resolve_in(Some(home.path())).unwrap();
        assert_eq!(r.jetstream_domain().name(), Some("other"));
        assert_eq!(
            ConnectSpec::default()
                .resolve_in(None)
                .unwrap()
                .jetstream_domain(),
            &JetStreamDomain::local()
        );
        assert_eq!(JetStreamDomain::local().api_prefix(), "$JS.API");
        for bad in ["a.b", "a b", "*", ">"] {
            assert!(
                matches!(
                    JetStreamDomain::named(bad),
                    Err(ConnectError::BadDomain { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_default_server_applies_only_when_nothing_names_one() {
        let r = ConnectSpec::default().resolve_in(None).unwrap();
        assert_eq!(r.servers(), [DEFAULT_SERVER]);
        assert_eq!(r.auth(), &Auth::None);
    }

    #[test]
    fn a_user_without_password_is_a_token() {
        let mut s = ConnectSpec::default();
        s.set_user_or_token(Some("s3cr3t".into()), None);
        assert_eq!(
            s.resolve_in(None).unwrap().auth(),
            &Auth::Token(Secret::new("s3cr3t"))
        );
        let mut s = ConnectSpec::default();
        s.set_user_or_token(Some("ada".into()), Some(Secret::new("pw")));
        assert_eq!(
            s.resolve_in(None).unwrap().auth(),
            &user_password("ada", "pw")
        );
        let mut s = ConnectSpec::default();
        s.set_user_or_token(None, Some(Secret::new("pw")));
        assert!(matches!(
            s.resolve_in(None),
            Err(ConnectError::PasswordWithoutUser)
        ));
    }

    #[test]
    fn credentials_in_urls_are_taken_out_and_used() {
        let r = spec(&["nats://ada:p%40ss@127.0.0.1:4222", "nats://127.0.0.1:4223"])
            .resolve_in(None)
            .unwrap();
        assert_eq!(
            r.servers(),
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(r.auth(), &user_password("ada", "p@ss"));

        let r = spec(&["tok3n@localhost:4222"]).resolve_in(None).unwrap();
        assert_eq!(r.servers(), ["nats://localhost:4222"]);
        assert_eq!(r.auth(), &Auth::Token(Secret::new("tok3n")));

        // An explicit flag wins over the URL.
        let mut s = spec(&["nats://ada:pw@h:1"]);
        s.token = Some(Secret::new("flag"));
        assert_eq!(
            s.resolve_in(None).unwrap().auth(),
            &Auth::Token(Secret::new("flag"))
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let mut s = spec(&["nats://ada:hunter2@h:1"]);
        s.password = Some(Secret::new("hunter3"));
        s.token = Some(Secret::new("hunter4"));
        let shown = format!("{s:?} {:?}", s.resolve_in(None).unwrap());
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let err = spec(&["nats://ada:hunter2@[bad"])
            .resolve_in(None)
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
        assert_eq!(
            redact_servers("nats://a:b@h:1,h2:2,tok@h3"),
            "nats://***@h:1,h2:2,***@h3"
        );
    }

    #[test]
    fn comma_separated_lists_and_timeouts_parse() {
        assert_eq!(
            parse_servers(" nats://a:1, ,nats://b:2 "),
            ["nats://a:1", "nats://b:2"]
        );
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("0").is_err());
    }

    #[test]
    fn tls_client_certificate_needs_both_halves() {
        let s = ConnectSpec {
            tls_cert: Some("/c.pem".into()),
            ..ConnectSpec::default()
        };
        assert!(matches!(s.resolve_in(None), Err(ConnectError::TlsPair)));
    }

    #[test]
    fn nkey_seed_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let kp = nkeys::KeyPair::new_user();
        let good = dir.path().join("user.nk");
        std::fs::write(&good, format!("{}\n", kp.seed().unwrap())).unwrap();
        assert_eq!(read_seed(&good).unwrap(), kp.seed().unwrap());
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUNOTASEED\n").unwrap();
        let err = read_seed(&bad).unwrap_err();
        assert!(matches!(err, ConnectError::NKeySeed { .. }));
        assert!(!err.to_string().contains("SUNOTASEED"));
    }

    #[test]
    fn permission_violations_name_the_subject() {
        let v = PermissionViolation::parse(
            r#"Permissions Violation for Publish to "attune.registry.runtime.list""#,
        )
        .unwrap();
        assert_eq!(v.operation, "Publish to");
        assert_eq!(v.subject, "attune.registry.runtime.list");
        let v = PermissionViolation::parse(
            r#"Permissions Violation for Subscription to "x.>" using queue "q""#,
        )
        .unwrap();
        assert_eq!(
            (v.operation.as_str(), v.subject.as_str()),
            ("Subscription to", "x.>")
        );
        assert!(PermissionViolation::parse("Authorization Violation").is_none());
    }
}
