//! The files a secured installation runs with, as `attune auth init` writes them: one nkey per
//! user, a nats-server configuration that gives each user its role's permissions
//! ([`crate::roles`]), one `nats` CLI context per user, and optionally a private CA with server
//! and client certificates for TLS.
//!
//! The logic lives here rather than in the CLI so that `attune up --secure`, the tests and any
//! other tool produce exactly the same files. A manifest (`attune-auth.json`, no secrets in it)
//! records what was written, so a later run can reuse the directory instead of guessing.
//!
//! Layout of an auth directory:
//!
//! ```text
//! DIR/nats-server.conf        listen address, JetStream, TLS, users and their permissions
//! DIR/attune-auth.json        the manifest: users, roles, public keys, file paths
//! DIR/keys/<user>.nk          each user's nkey seed (0600; the secret)
//! DIR/contexts/<user>.json    `nats` CLI context: url, nkey, cert, key, ca, inbox_prefix
//! DIR/tls/ca.pem, ca-key.pem  with TLS: the private CA (its key 0600)
//! DIR/tls/server*.pem         with TLS: the server certificate and key (0600)
//! DIR/tls/<user>*.pem         with TLS: each user's client certificate and key (0600)
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::name::{check_name, NameError};
use crate::roles::{inbox_prefix, Role};
use crate::subject::{InvalidPrefix, Namespace};

/// The manifest's file name in an auth directory.
pub const MANIFEST: &str = "attune-auth.json";
/// The nats-server configuration's file name in an auth directory.
pub const SERVER_CONFIG: &str = "nats-server.conf";
/// How long generated certificates are valid.
const CERT_VALIDITY: time::Duration = time::Duration::days(825);

/// What `attune auth init` should generate.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// The installation's namespace: permissions name its subjects and buckets.
    pub namespace: Namespace,
    /// The address nats-server listens on (`127.0.0.1`, `0.0.0.0`).
    pub listen_host: String,
    /// The port nats-server listens on.
    pub port: u16,
    /// The host name clients dial (contexts' URL, and a name in the server certificate);
    /// defaults to the listen address, or `127.0.0.1` when that is a wildcard.
    pub public_host: Option<String>,
    /// nats-server's JetStream store; defaults to `DIR/jetstream`.
    pub store_dir: Option<PathBuf>,
    /// Generate a CA, a server certificate and client certificates, and require TLS with client
    /// certificates.
    pub tls: bool,
    /// More names (DNS or IP) the server certificate is valid for.
    pub tls_names: Vec<String>,
    /// Client users besides `client`, each with its own key and inbox (a team, a CI system).
    pub clients: Vec<String>,
    /// Replace existing keys instead of refusing.
    pub force: bool,
}

impl AuthOptions {
    /// Defaults for a single local server: `127.0.0.1:4222`, no TLS, the four role users.
    pub fn new(namespace: Namespace) -> Self {
        AuthOptions {
            namespace,
            listen_host: "127.0.0.1".to_string(),
            port: 4222,
            public_host: None,
            store_dir: None,
            tls: false,
            tls_names: Vec::new(),
            clients: Vec::new(),
            force: false,
        }
    }
}

/// Why an auth directory could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Keys exist and `force` was not given: replacing them would lock out every service that
    /// uses them.
    #[error("{} already exists: refusing to replace existing keys (--force generates new ones, and every service must then use the new files)", path.display())]
    Exists {
        /// The file that is already there.
        path: PathBuf,
    },
    /// A file or directory could not be written or read.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done (`writing`, `reading`).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A user name cannot be used (it becomes a file name and an inbox subject token).
    #[error("user name \"{name}\"")]
    BadUser {
        /// The name given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// Two users would have the same name.
    #[error("user name \"{0}\" is used twice (admin, registry, runner and client are taken by the roles)")]
    DuplicateUser(String),
    /// Key generation failed.
    #[error("generating an nkey")]
    NKey(#[source] nkeys::error::Error),
    /// Certificate generation failed.
    #[error("generating TLS certificates")]
    Certificate(#[source] rcgen::Error),
    /// The manifest is not one `attune auth init` wrote.
    #[error("{} is not a manifest written by `attune auth init`", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest names a prefix that is not valid.
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    /// The directory has no user for a role the caller needs.
    #[error("{} has no {role} user", dir.display())]
    NoUser {
        /// The auth directory.
        dir: PathBuf,
        /// The role asked for.
        role: Role,
    },
}

/// An auth directory as written: what the manifest records. Holds paths and public keys only;
/// seeds and private keys stay in their files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthDir {
    /// The directory (absolute).
    pub dir: PathBuf,
    /// The subject prefix the permissions were written for.
    pub prefix: String,
    /// The URL clients connect to (`tls://` when TLS is required).
    pub url: String,
    /// The nats-server configuration file.
    pub server_config: PathBuf,
    /// nats-server's JetStream store directory, as configured.
    pub store_dir: PathBuf,
    /// The port nats-server listens on.
    pub port: u16,
    /// The CA and server certificate, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Every user, the four role users first.
    pub users: Vec<UserFiles>,
}

/// The TLS files of the server side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The private CA's certificate: clients and the server trust it.
    pub ca: PathBuf,
    /// The CA's private key (0600), to sign more certificates later.
    pub ca_key: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server's private key (0600).
    pub server_key: PathBuf,
}

/// One user's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFiles {
    /// The user name (file names, inbox prefix).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its nkey's public key (`U…`), as the server configuration lists it.
    pub public_key: String,
    /// Its seed file (0600).
    pub seed: PathBuf,
    /// Its `nats` CLI context.
    pub context: PathBuf,
    /// The only inbox prefix it may receive replies under.
    pub inbox_prefix: String,
    /// Its client certificate, when TLS is on.
    pub cert: Option<PathBuf>,
    /// Its client certificate's private key (0600), when TLS is on.
    pub key: Option<PathBuf>,
}

impl AuthDir {
    /// The namespace the permissions were written for.
    pub fn namespace(&self) -> Result<Namespace, AuthError> {
        Ok(Namespace::new(&self.prefix)?)
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&UserFiles> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first user with `role` (the one named after the role, as `init` writes them).
    pub fn for_role(&self, role: Role) -> Result<&UserFiles, AuthError> {
        self.users
            .iter()
            .find(|u| u.role == role)
            .ok_or_else(|| AuthError::NoUser {
                dir: self.dir.clone(),
                role,
            })
    }

    /// Every file the directory holds, for a listing (`attune auth init` prints it).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.server_config.clone(), self.dir.join(MANIFEST)];
        if let Some(t) = &self.tls {
            out.extend([&t.ca, &t.ca_key, &t.server_cert, &t.server_key].map(Clone::clone));
        }
        for u in &self.users {
            out.extend([u.seed.clone(), u.context.clone()]);
            out.extend(u.cert.clone());
            out.extend(u.key.clone());
        }
        out
    }

    /// Connect options for `user`, read from the context file written for it, exactly as
    /// `attune --context <file>` reads it: its server, nkey, inbox prefix and, with TLS, the CA
    /// and its client certificate. One way to connect, so the files are tested as users use them.
    pub async fn connect_options(
        &self,
        user: &UserFiles,
    ) -> Result<async_nats::ConnectOptions, crate::connect::ConnectError> {
        crate::connect::ConnectSpec {
            context: Some(user.context.display().to_string()),
            name: Some(format!("attune-{}", user.name)),
            ..Default::default()
        }
        .resolve()?
        .options()
        .await
    }
}

/// Reads the auth directory `dir` that [`init`] wrote.
pub fn load(dir: &Path) -> Result<AuthDir, AuthError> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|source| AuthError::Io {
        what: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| AuthError::Manifest { path, source })
}

/// Whether `dir` holds an auth directory (its manifest).
pub fn exists(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Generates everything into `dir`: keys, certificates, contexts, the server configuration and
/// the manifest. Refuses when keys are already there, unless `opts.force`.
pub fn init(dir: &Path, opts: &AuthOptions) -> Result<AuthDir, AuthError> {
    let users = user_list(&opts.clients)?;
    private_dir(dir)?;
    let dir = dir.canonicalize().map_err(|source| AuthError::Io {
        what: "opening",
        path: dir.to_path_buf(),
        source,
    })?;
    if !opts.force {
        for existing in [
            dir.join(MANIFEST),
            dir.join(SERVER_CONFIG),
            dir.join("keys"),
        ] {
            if existing.exists() {
                return Err(AuthError::Exists { path: existing });
            }
        }
    }
    let keys_dir = dir.join("keys");
    let contexts_dir = dir.join("contexts");
    private_dir(&keys_dir)?;
    create_dir(&contexts_dir)?;

    let public_host = opts.public_host.clone().unwrap_or_else(|| {
        if matches!(opts.listen_host.as_str(), "0.0.0.0" | "::" | "[::]") {
            "127.0.0.1".to_string()
        } else {
            opts.listen_host.clone()
        }
    });
    let scheme = if opts.tls { "tls" } else { "nats" };
    let url = format!("{scheme}://{}:{}", bracket(&public_host), opts.port);

    let ca = opts
        .tls
        .then(|| {
            private_dir(&dir.join("tls"))?;
            Ca::generate(&dir, &names(&public_host, opts))
        })
        .transpose()?;

    let mut written = Vec::new();
    for (name, role) in users {
        let key = nkeys::KeyPair::new_user();
        let seed = key.seed().map_err(AuthError::NKey)?;
        let seed_path = keys_dir.join(format!("{name}.nk"));
        write_private(&seed_path, format!("{seed}\n").as_bytes())?;
        let (cert, key_path) = match &ca {
            Some(ca) => {
                let (c, k) = ca.client(&dir, &name)?;
                (Some(c), Some(k))
            }
            None => (None, None),
        };
        let user = UserFiles {
            inbox_prefix: inbox_prefix(&name),
            public_key: key.public_key(),
            seed: seed_path,
            context: contexts_dir.join(format!("{name}.json")),
            cert,
            key: key_path,
            role,
            name,
        };
        written.push(user);
    }
    let auth = AuthDir {
        server_config: dir.join(SERVER_CONFIG),
        store_dir: opts
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.join("jetstream")),
        prefix: opts.namespace.prefix().to_string(),
        port: opts.port,
        tls: ca.map(|ca| ca.files),
        users: written,
        url,
        dir: dir.clone(),
    };
    for user in &auth.users {
        write_public(&user.context, context_json(&auth, user).as_bytes())?;
    }
    let config = server_config(&auth, &opts.namespace, &opts.listen_host);
    write_public(&auth.server_config, config.as_bytes())?;
    let manifest = serde_json::to_string_pretty(&auth).expect("the manifest serialises");
    write_public(&dir.join(MANIFEST), manifest.as_bytes())?;
    Ok(auth)
}

/// The users to create: the four roles, then the extra clients.
fn user_list(clients: &[String]) -> Result<Vec<(String, Role)>, AuthError> {
    let mut users: Vec<(String, Role)> = Role::ALL
        .into_iter()
        .map(|r| (r.as_str().to_string(), r))
        .collect();
    for name in clients {
        check_name(name).map_err(|source| AuthError::BadUser {
            name: name.clone(),
            source,
        })?;
        if users.iter().any(|(n, _)| n == name) {
            return Err(AuthError::DuplicateUser(name.clone()));
        }
        users.push((name.clone(), Role::Client));
    }
    Ok(users)
}

/// The nats-server configuration for `auth`: listen address, JetStream store, TLS, and every
/// user with its nkey and its role's permissions.
pub fn server_config(auth: &AuthDir, ns: &Namespace, listen_host: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("            {}", q(s)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# nats-server configuration for Attune (subject prefix \"{}\"), written by `attune auth init`.\n\
         # Every user authenticates with an nkey; its permissions are the least its role needs.\n\
         # Start it with: nats-server -c {}\n\n",
        ns.prefix(),
        auth.server_config.display()
    ));
    out.push_str(&format!(
        "listen: {}\n\n",
        q(&format!("{}:{}", bracket(listen_host), auth.port))
    ));
    out.push_str(&format!(
        "jetstream {{\n    store_dir: {}\n}}\n\n",
        q(&auth.store_dir.display().to_string())
    ));
    if let Some(tls) = &auth.tls {
        out.push_str(&format!(
            "# Clients must present a certificate signed by this CA, as well as their nkey.\n\
             tls {{\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n    verify: true\n    timeout: 2\n}}\n\n",
            q(&tls.server_cert.display().to_string()),
            q(&tls.server_key.display().to_string()),
            q(&tls.ca.display().to_string()),
        ));
    }
    out.push_str("authorization {\n    users: [\n");
    for user in &auth.users {
        let p = user.role.permissions(ns, &user.inbox_prefix);
        out.push_str(&format!(
            "        # {} (role {})\n        {{\n        nkey: {}\n        permissions: {{\n          publish: {{ allow: [\n{}\n          ] }}\n          subscribe: {{ allow: [\n{}\n          ] }}\n          allow_responses: {}\n        }}\n        }}\n",
            user.name,
            user.role,
            q(&user.public_key),
            list(&p.publish),
            list(&p.subscribe),
            p.allow_responses,
        ));
    }
    out.push_str("    ]\n}\n");
    out
}

/// One user's context in the `nats` CLI's format (`nats --context FILE`).
fn context_json(auth: &AuthDir, user: &UserFiles) -> String {
    let path = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let value = json!({
        "description": format!("Attune {} ({} role), written by attune auth init", user.name, user.role),
        "url": auth.url,
        "nkey": user.seed.display().to_string(),
        "cert": path(user.cert.as_deref()),
        "key": path(user.key.as_deref()),
        "ca": path(auth.tls.as_ref().map(|t| t.ca.as_path())),
        "inbox_prefix": user.inbox_prefix,
        "user": "",
        "password": "",
        "creds": "",
        "nsc": "",
        "jetstream_domain": "",
        "jetstream_api_prefix": "",
        "jetstream_event_prefix": "",
        "user_jwt": "",
        "tls_first": false,
    });
    serde_json::to_string_pretty(&value).expect("contexts serialise") + "\n"
}

/// The names the server certificate is valid for.
fn names(public_host: &str, opts: &AuthOptions) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let listen = (!matches!(opts.listen_host.as_str(), "0.0.0.0" | "::" | "[::]"))
        .then_some(opts.listen_host.clone());
    for n in std::iter::once(public_host.to_string())
        .chain(listen)
        .chain(opts.tls_names.iter().cloned())
    {
        let n = n.trim_start_matches('[').trim_end_matches(']').to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// `host` as it stands before `:port` (IPv6 addresses in brackets).
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The private CA, while it signs the server's and the users' certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    files: TlsFiles,
}

impl Ca {
    /// Generates the CA and the server certificate for `names`, and writes both.
    fn generate(dir: &Path, names: &[String]) -> Result<Ca, AuthError> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let tls = dir.join("tls");
        let key = KeyPair::generate().map_err(AuthError::Certificate)?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(AuthError::Certificate)?;
        params.distinguished_name = distinguished_name("Attune private CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key).map_err(AuthError::Certificate)?;
        let files = TlsFiles {
            ca: tls.join("ca.pem"),
            ca_key: tls.join("ca-key.pem"),
            server_cert: tls.join("server.pem"),
            server_key: tls.join("server-key.pem"),
        };
        write_public(&files.ca, cert.pem().as_bytes())?;
        write_private(&files.ca_key, key.serialize_pem().as_bytes())?;
        let ca = Ca { cert, key, files };
        let (server_cert, server_key) = ca.sign(
            names.to_vec(),
            "Attune nats-server",
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write_public(&ca.files.server_cert, server_cert.as_bytes())?;
        write_private(&ca.files.server_key, server_key.as_bytes())?;
        Ok(ca)
    }

    /// Generates and writes the client certificate of user `name`; returns (cert, key) paths.
    fn client(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), AuthError> {
        let (cert, key) =
            self.sign(Vec::new(), name, rcgen::ExtendedKeyUsagePurpose::ClientAuth)?;
        let cert_path = dir.join("tls").join(format!("{name}.pem"));
        let key_path = dir.join("tls").join(format!("{name}-key.pem"));
        write_public(&cert_path, cert.as_bytes())?;
        write_private(&key_path, key.as_bytes())?;
        Ok((cert_path, key_path))
    }

    /// A new key and a certificate for it signed by the CA, both as PEM.
    fn sign(
        &self,
        names: Vec<String>,
        common_name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<(String, String), AuthError> {
        use rcgen::{CertificateParams, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().map_err(AuthError::Certificate)?;
        let mut params = CertificateParams::new(names).map_err(AuthError::Certificate)?;
        params.distinguished_name = distinguished_name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(AuthError::Certificate)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Attune");
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

/// From a day ago (clock skew between hosts) for [`CERT_VALIDITY`].
fn validity(params: &mut rcgen::CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + CERT_VALIDITY;
}

fn create_dir(dir: &Path) -> Result<(), AuthError> {
    fs::create_dir_all(dir).map_err(|source| AuthError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates `dir` readable by its owner only (or tightens an existing one).
fn private_dir(dir: &Path) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Writes a secret: created 0600, and set to 0600 if the file was already there.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a file others may read (certificates, contexts, configuration).
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    write_mode(path, bytes, 0o644)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // `mode` applies only to a file created now; one that existed keeps its bits otherwise.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_keys_contexts_and_a_config_naming_every_user() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = AuthOptions::new(Namespace::default());
        opts.port = 4333;
        opts.clients = vec!["ci".into()];
        let auth = init(tmp.path(), &opts).unwrap();

        let names: Vec<_> = auth.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["admin", "registry", "runner", "client", "ci"]);
        assert_eq!(auth.user("ci").unwrap().role, Role::Client);
        assert_eq!(auth.url, "nats://127.0.0.1:4333");
        let config = fs::read_to_string(&auth.server_config).unwrap();
        assert!(config.contains("listen: \"127.0.0.1:4333\""));
        assert!(!config.contains("tls {"));
        for user in &auth.users {
            let seed = fs::read_to_string(&user.seed).unwrap();
            assert!(seed.starts_with("SU"), "a user seed");
            assert_eq!(mode(&user.seed), 0o600);
            assert!(!config.contains(seed.trim()), "no seed in the config");
            assert!(config.contains(&user.public_key));
            let ctx: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&user.context).unwrap()).unwrap();
            assert_eq!(ctx["url"], auth.url);
            assert_eq!(ctx["nkey"], user.seed.display().to_string());
            assert_eq!(ctx["inbox_prefix"], format!("_INBOX_{}", user.name));
        }
        assert_eq!(mode(&auth.dir.join("keys")), 0o700);
        for file in auth.files() {
            assert!(file.is_file(), "{} listed but not written", file.display());
        }
        assert_eq!(load(tmp.path()).unwrap(), auth);
    }

    #[test]
    fn refuses_to_replace_keys_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = AuthOptions::new(Namespace::default());
        let first = init(tmp.path(), &opts).unwrap();
        let err = init(tmp.path(), &opts).unwrap_err();
        assert!(matches!(err, AuthError::Exists { .. }), "{err}");
        assert_eq!(load(tmp.path()).unwrap(), first, "nothing was touched");
        let forced = init(
            tmp.path(),
            &AuthOptions {
                force: true,
                ..opts
            },
        )
        .unwrap();
        assert_ne!(forced.users[0].public_key, first.users[0].public_key);
    }

    #[test]
    fn tls_writes_a_ca_server_and_client_certificates_with_private_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = AuthOptions::new(Namespace::default());
        opts.tls = true;
        opts.tls_names = vec!["nats.example.com".into()];
        let auth = init(tmp.path(), &opts).unwrap();
        assert!(auth.url.starts_with("tls://"));
        let tls = auth.tls.as_ref().unwrap();
        assert_eq!(mode(&tls.ca_key), 0o600);
        assert_eq!(mode(&tls.server_key), 0o600);
        for user in &auth.users {
            assert!(fs::read_to_string(user.cert.as_ref().unwrap())
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----"));
            assert_eq!(mode(user.key.as_ref().unwrap()), 0o600);
        }
        let config = fs::read_to_string(&auth.server_config).unwrap();
        assert!(config.contains("verify: true"));
        let ctx: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&auth.users[3].context).unwrap()).unwrap();
        assert_eq!(ctx["ca"], tls.ca.display().to_string());
    }

    #[test]
    fn bad_or_duplicate_client_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = AuthOptions::new(Namespace::default());
        opts.clients = vec!["a.b".into()];
        assert!(matches!(
            init(tmp.path(), &opts),
            Err(AuthError::BadUser { .. })
        ));
        opts.clients = vec!["runner".into()];
        assert!(matches!(
            init(tmp.path(), &opts),
            Err(AuthError::DuplicateUser(_))
        ));
    }
}
