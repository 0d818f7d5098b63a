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
//! DIR/keys/leaf-link.nk      a leaf site: the key its link to the hub authenticates with (0600)
//! ```
//!
//! A hub written with a leaf port ([`AuthOptions::leaf_port`]) accepts leaf node links, and
//! [`add_leaf_site`] writes a *site* directory for a remote host: the same layout, with a
//! runner and a client user whose permissions name the hub's JetStream domain, and a server
//! configuration whose leaf link authenticates with a key of its own. The hub gets a user for
//! that key whose permissions are what the site's users may do, so a site whose server is in
//! other hands can still do no more over its link than its runners and clients could.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::connect::JetStreamDomain;
use crate::name::{check_name, NameError};
use crate::roles::{inbox_prefix, leaf_link_permissions, Permissions, Role};
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
    /// Accept leaf node links from sites ([`add_leaf_site`]) on this port.
    pub leaf_port: Option<u16>,
    /// The server's JetStream domain; leaf sites name it to reach this JetStream. Needed with
    /// `leaf_port` (a site has its own JetStream, so the hub's must have a name).
    pub js_domain: Option<String>,
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
            leaf_port: None,
            js_domain: None,
        }
    }
}

/// What [`add_leaf_site`] should write for one leaf site.
#[derive(Debug, Clone)]
pub struct LeafSiteOptions {
    /// The site's name, which is also its own JetStream domain (one word, not the hub's).
    pub site: String,
    /// The address the site's nats-server listens on for its local runners and clients.
    pub listen_host: String,
    /// The port the site's nats-server listens on.
    pub port: u16,
    /// The host name the site's runners and clients dial; defaults as [`AuthOptions`]'s does.
    pub public_host: Option<String>,
    /// The site server's JetStream store; defaults to `SITE_DIR/jetstream`.
    pub store_dir: Option<PathBuf>,
    /// The host name the site's server reaches the hub's leaf port with; defaults to the host
    /// of the hub's client URL.
    pub hub_host: Option<String>,
    /// Replace an existing site of this name (new keys) instead of refusing.
    pub force: bool,
    /// The runtimes whose invocations the hub sends the site; empty: every runtime.
    pub runtimes: Vec<String>,
}

impl LeafSiteOptions {
    /// Defaults for site `site`: a server on `127.0.0.1:4222`, reaching the hub at its client
    /// URL's host.
    pub fn new(site: &str) -> Self {
        LeafSiteOptions {
            site: site.to_string(),
            listen_host: "127.0.0.1".to_string(),
            port: 4222,
            public_host: None,
            store_dir: None,
            hub_host: None,
            force: false,
            runtimes: Vec::new(),
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
    /// Leaf sites need a hub: a directory written with a leaf port and a JetStream domain.
    #[error("{} accepts no leaf node links: write it with `attune auth init --leaf-port PORT` first", dir.display())]
    NotAHub {
        /// The hub's auth directory.
        dir: PathBuf,
    },
    /// A runtime name that cannot be used (it becomes a subject token).
    #[error("runtime name \"{name}\"")]
    BadRuntime {
        /// The name given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// A JetStream domain or site name that cannot be used.
    #[error("JetStream domain {domain:?}: {why}")]
    BadDomain {
        /// The name given.
        domain: String,
        /// What is wrong with it.
        why: String,
    },
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
    /// The address nats-server listens on (its client and leaf node ports).
    #[serde(default = "default_listen_host")]
    pub listen_host: String,
    /// The CA and server certificate, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Every user, the four role users first (a leaf site: its runner and client).
    pub users: Vec<UserFiles>,
    /// The server's JetStream domain, when it has one.
    #[serde(default)]
    pub js_domain: Option<String>,
    /// A hub: the port it accepts leaf node links on.
    #[serde(default)]
    pub leaf_port: Option<u16>,
    /// A hub: the leaf sites written for it, each with the key its link authenticates with.
    #[serde(default)]
    pub sites: Vec<LeafSite>,
    /// A leaf site: the hub its server links to.
    #[serde(default)]
    pub hub: Option<HubLink>,
}

fn default_listen_host() -> String {
    "127.0.0.1".to_string()
}

/// A leaf site as its hub records it: enough to give its link the site users' permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafSite {
    /// The site's name and JetStream domain.
    pub site: String,
    /// The public key of the site's leaf link.
    pub public_key: String,
    /// The site's users: their roles and inbox prefixes.
    pub users: Vec<SiteUser>,
    /// The site's directory, as written.
    pub dir: PathBuf,
    /// The runtimes whose invocations the hub sends it; empty: every runtime.
    #[serde(default)]
    pub runtimes: Vec<String>,
}

/// One user of a leaf site, as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteUser {
    /// Its role (runner or client).
    pub role: Role,
    /// The inbox prefix its replies arrive under.
    pub inbox_prefix: String,
}

/// A leaf site's link to its hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubLink {
    /// The hub's leaf node URL (`nats-leaf://host:port`).
    pub url: String,
    /// The hub's JetStream domain, which the site's users name to reach it.
    pub domain: String,
    /// The link's nkey seed (0600).
    pub seed: PathBuf,
    /// The hub's CA certificate, when the hub requires TLS.
    pub ca: Option<PathBuf>,
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

    /// The JetStream domain this directory's users reach the installation's JetStream through:
    /// the hub's for a leaf site, the server's own otherwise.
    pub fn users_domain(&self) -> Result<JetStreamDomain, AuthError> {
        match &self.hub {
            Some(hub) => domain(&hub.domain),
            None => Ok(JetStreamDomain::local()),
        }
    }

    /// What `user` may publish and subscribe to: its role's permissions, in this directory's
    /// namespace and JetStream domain.
    pub fn permissions(&self, user: &UserFiles) -> Result<Permissions, AuthError> {
        Ok(user.role.permissions_in(
            &self.namespace()?,
            &user.inbox_prefix,
            &self.users_domain()?,
        ))
    }

    /// Every file the directory holds, for a listing (`attune auth init` prints it).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.server_config.clone(), self.dir.join(MANIFEST)];
        if let Some(t) = &self.tls {
            out.extend([&t.ca, &t.ca_key, &t.server_cert, &t.server_key].map(Clone::clone));
        }
        if let Some(hub) = &self.hub {
            out.push(hub.seed.clone());
            out.extend(hub.ca.clone());
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
    let js_domain = match (&opts.js_domain, opts.leaf_port) {
        (Some(d), _) => {
            domain(d)?;
            Some(d.clone())
        }
        (None, Some(_)) => Some(DEFAULT_HUB_DOMAIN.to_string()),
        (None, None) => None,
    };
    // New keys for the hub's users leave its leaf sites' link keys valid: keep the sites.
    let sites = if opts.force {
        load(dir).map(|previous| previous.sites).unwrap_or_default()
    } else {
        Vec::new()
    };
    let dir = prepare_dir(dir, opts.force)?;
    let public_host = public_host(opts.public_host.as_deref(), &opts.listen_host);
    let scheme = if opts.tls { "tls" } else { "nats" };
    let url = format!("{scheme}://{}:{}", bracket(&public_host), opts.port);

    let ca = opts
        .tls
        .then(|| {
            private_dir(&dir.join("tls"))?;
            Ca::generate(&dir, &names(&public_host, opts))
        })
        .transpose()?;
    let users = users
        .into_iter()
        .map(|(name, role)| {
            let inbox = inbox_prefix(&name);
            write_user(&dir, name, role, inbox, ca.as_ref())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let auth = AuthDir {
        server_config: dir.join(SERVER_CONFIG),
        store_dir: opts
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.join("jetstream")),
        prefix: opts.namespace.prefix().to_string(),
        port: opts.port,
        listen_host: opts.listen_host.clone(),
        tls: ca.map(|ca| ca.files),
        users,
        url,
        dir: dir.clone(),
        js_domain,
        leaf_port: opts.leaf_port,
        sites,
        hub: None,
    };
    write_dir(&auth)?;
    Ok(auth)
}

/// The JetStream domain a hub gets when it accepts leaf links and none was named.
pub const DEFAULT_HUB_DOMAIN: &str = "hub";

/// The leaf-link key's file name in a site's `keys/` directory.
const LINK_KEY: &str = "leaf-link.nk";

/// Writes a leaf site for the hub in `hub_dir` into `site_dir`: a runner and a client user
/// (keys and contexts, reaching the hub's JetStream through its domain), the key the site's
/// leaf link authenticates with, and the site's nats-server configuration (listen address, its
/// own JetStream domain, the link, the users). Then records the site in the hub's manifest and
/// rewrites the hub's configuration with a user for the link: the hub's nats-server must
/// reload it (`nats-server --signal reload`) before the site can connect.
///
/// Returns the hub's directory as updated, and the site's.
pub fn add_leaf_site(
    hub_dir: &Path,
    site_dir: &Path,
    opts: &LeafSiteOptions,
) -> Result<(AuthDir, AuthDir), AuthError> {
    let mut hub = load(hub_dir)?;
    let (Some(leaf_port), Some(hub_domain)) = (hub.leaf_port, hub.js_domain.clone()) else {
        return Err(AuthError::NotAHub { dir: hub.dir });
    };
    let site_domain = domain(&opts.site)?;
    for runtime in &opts.runtimes {
        check_name(runtime).map_err(|source| AuthError::BadRuntime {
            name: runtime.clone(),
            source,
        })?;
    }
    if opts.site == hub_domain {
        return Err(AuthError::BadDomain {
            domain: opts.site.clone(),
            why: "a site's JetStream domain must differ from the hub's".into(),
        });
    }
    if !opts.force && hub.sites.iter().any(|s| s.site == opts.site) {
        return Err(AuthError::Exists {
            path: hub.dir.join(MANIFEST),
        });
    }
    // The link may receive what is sent to the site's inboxes: no hub user may share one.
    for role in [Role::Runner, Role::Client] {
        let inbox = site_inbox(&opts.site, role);
        if let Some(user) = hub.users.iter().find(|u| u.inbox_prefix == inbox) {
            return Err(AuthError::BadDomain {
                domain: opts.site.clone(),
                why: format!(
                    "the site's {role} would receive replies under {inbox}, the inbox of hub user {:?}: choose another site name",
                    user.name
                ),
            });
        }
    }
    let ns = hub.namespace()?;
    if site_dir.canonicalize().ok() == Some(hub.dir.clone()) {
        return Err(AuthError::BadDomain {
            domain: opts.site.clone(),
            why: format!("the site's directory is the hub's ({})", hub.dir.display()),
        });
    }
    let dir = prepare_dir(site_dir, opts.force)?;
    let public_host = public_host(opts.public_host.as_deref(), &opts.listen_host);
    let users = [Role::Runner, Role::Client]
        .into_iter()
        .map(|role| {
            write_user(
                &dir,
                role.as_str().to_string(),
                role,
                site_inbox(&opts.site, role),
                None,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let link_key = nkeys::KeyPair::new_user();
    let link_seed = dir.join("keys").join(LINK_KEY);
    write_private(
        &link_seed,
        format!("{}\n", link_key.seed().map_err(AuthError::NKey)?).as_bytes(),
    )?;
    let ca = match &hub.tls {
        Some(tls) => {
            let copy = dir.join("hub-ca.pem");
            let pem = fs::read(&tls.ca).map_err(|source| AuthError::Io {
                what: "reading",
                path: tls.ca.clone(),
                source,
            })?;
            write_public(&copy, &pem)?;
            Some(copy)
        }
        None => None,
    };
    let hub_host = match &opts.hub_host {
        Some(h) => bracket(h),
        None => url_host(&hub.url).to_string(),
    };
    let site = AuthDir {
        server_config: dir.join(SERVER_CONFIG),
        store_dir: opts
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.join("jetstream")),
        prefix: ns.prefix().to_string(),
        url: format!("nats://{}:{}", bracket(&public_host), opts.port),
        port: opts.port,
        listen_host: opts.listen_host.clone(),
        tls: None,
        users,
        dir: dir.clone(),
        js_domain: site_domain.name().map(str::to_string),
        leaf_port: None,
        sites: Vec::new(),
        hub: Some(HubLink {
            url: format!("nats-leaf://{hub_host}:{leaf_port}"),
            domain: hub_domain,
            seed: link_seed,
            ca,
        }),
    };
    write_dir(&site)?;

    hub.sites.retain(|s| s.site != opts.site);
    hub.sites.push(LeafSite {
        site: opts.site.clone(),
        public_key: link_key.public_key(),
        users: site
            .users
            .iter()
            .map(|u| SiteUser {
                role: u.role,
                inbox_prefix: u.inbox_prefix.clone(),
            })
            .collect(),
        dir,
        runtimes: opts.runtimes.clone(),
    });
    write_dir(&hub)?;
    Ok((hub, site))
}

/// The inbox prefix of the user with `role` at leaf site `site`, unique to the site: the link
/// carries replies to these prefixes only.
fn site_inbox(site: &str, role: Role) -> String {
    inbox_prefix(&format!("{site}_{role}"))
}

/// Creates `dir` (owner only) and returns its absolute path; refuses when keys are already
/// there, unless `force`.
fn prepare_dir(dir: &Path, force: bool) -> Result<PathBuf, AuthError> {
    private_dir(dir)?;
    let dir = dir.canonicalize().map_err(|source| AuthError::Io {
        what: "opening",
        path: dir.to_path_buf(),
        source,
    })?;
    if !force {
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
    private_dir(&dir.join("keys"))?;
    create_dir(&dir.join("contexts"))?;
    Ok(dir)
}

/// The host clients dial: the one given, else the listen address (`127.0.0.1` for a wildcard).
fn public_host(given: Option<&str>, listen_host: &str) -> String {
    given.map(str::to_string).unwrap_or_else(|| {
        if matches!(listen_host, "0.0.0.0" | "::" | "[::]") {
            "127.0.0.1".to_string()
        } else {
            listen_host.to_string()
        }
    })
}

/// The host part of a client URL (`nats://host:port` → `host`).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

/// A JetStream domain name, checked as the connection options check it.
fn domain(name: &str) -> Result<JetStreamDomain, AuthError> {
    let bad = |why: String| AuthError::BadDomain {
        domain: name.to_string(),
        why,
    };
    // A safe name is also a valid domain (one subject token, not empty).
    check_name(name).map_err(|e| bad(e.to_string()))?;
    JetStreamDomain::named(name).map_err(|e| bad(e.to_string()))
}

/// Generates user `name`'s nkey (and client certificate, with a CA) into `dir`.
fn write_user(
    dir: &Path,
    name: String,
    role: Role,
    inbox_prefix: String,
    ca: Option<&Ca>,
) -> Result<UserFiles, AuthError> {
    let key = nkeys::KeyPair::new_user();
    let seed = key.seed().map_err(AuthError::NKey)?;
    let seed_path = dir.join("keys").join(format!("{name}.nk"));
    write_private(&seed_path, format!("{seed}\n").as_bytes())?;
    let (cert, key_path) = match ca {
        Some(ca) => {
            let (c, k) = ca.client(dir, &name)?;
            (Some(c), Some(k))
        }
        None => (None, None),
    };
    Ok(UserFiles {
        inbox_prefix,
        public_key: key.public_key(),
        seed: seed_path,
        context: dir.join("contexts").join(format!("{name}.json")),
        cert,
        key: key_path,
        role,
        name,
    })
}

/// Writes a directory's contexts, server configuration and manifest from `auth`.
fn write_dir(auth: &AuthDir) -> Result<(), AuthError> {
    for user in &auth.users {
        write_public(&user.context, context_json(auth, user).as_bytes())?;
    }
    let config = server_config(auth)?;
    // A site's configuration holds its link's seed.
    if auth.hub.is_some() {
        write_private(&auth.server_config, config.as_bytes())?;
    } else {
        write_public(&auth.server_config, config.as_bytes())?;
    }
    let manifest = serde_json::to_string_pretty(auth).expect("the manifest serialises");
    write_public(&auth.dir.join(MANIFEST), manifest.as_bytes())
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

/// The nats-server configuration for `auth`: listen address, JetStream store (and domain), TLS,
/// leaf node links (a hub's listener, a site's link to its hub), and every user with its nkey
/// and its role's permissions. A site's configuration holds its link's seed (nats-server reads
/// a leaf remote's nkey from its configuration).
pub fn server_config(auth: &AuthDir) -> Result<String, AuthError> {
    let ns = auth.namespace()?;
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut out = String::new();
    out.push_str(&format!(
        "# nats-server configuration for Attune (subject prefix \"{}\"), written by `attune auth`.\n\
         # Every user authenticates with an nkey; its permissions are the least its role needs.\n\
         # Start it with: nats-server -c {}\n\n",
        ns.prefix(),
        auth.server_config.display()
    ));
    out.push_str(&format!(
        "listen: {}\n\n",
        q(&format!("{}:{}", bracket(&auth.listen_host), auth.port))
    ));
    out.push_str(&format!(
        "jetstream {{\n    store_dir: {}\n",
        q(&auth.store_dir.display().to_string())
    ));
    if let Some(d) = &auth.js_domain {
        out.push_str(&format!("    domain: {}\n", q(d)));
    }
    out.push_str("}\n\n");
    if let Some(tls) = &auth.tls {
        out.push_str(&format!(
            "# Clients must present a certificate signed by this CA, as well as their nkey.\n\
             tls {{\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n    verify: true\n    timeout: 2\n}}\n\n",
            q(&tls.server_cert.display().to_string()),
            q(&tls.server_key.display().to_string()),
            q(&tls.ca.display().to_string()),
        ));
    }
    if let Some(port) = auth.leaf_port {
        out.push_str(&format!(
            "# Leaf sites link here, each with its own nkey (a user below that may connect only as a\n\
             # leaf node).\nleafnodes {{\n    listen: {}\n",
            q(&format!("{}:{port}", bracket(&auth.listen_host)))
        ));
        if let Some(tls) = &auth.tls {
            out.push_str(&format!(
                "    tls {{\n        cert_file: {}\n        key_file: {}\n        timeout: 2\n    }}\n",
                q(&tls.server_cert.display().to_string()),
                q(&tls.server_key.display().to_string()),
            ));
        }
        out.push_str("}\n\n");
    }
    if let Some(hub) = &auth.hub {
        let seed = fs::read_to_string(&hub.seed).map_err(|source| AuthError::Io {
            what: "reading",
            path: hub.seed.clone(),
            source,
        })?;
        out.push_str(&format!(
            "# The link to the hub (JetStream domain {}); what crosses it is limited by the hub.\n\
             leafnodes {{\n    remotes: [\n        {{\n        url: {}\n        nkey: {}\n",
            q(&hub.domain),
            q(&hub.url),
            q(seed.trim()),
        ));
        if let Some(ca) = &hub.ca {
            out.push_str(&format!(
                "        tls {{ ca_file: {} }}\n",
                q(&ca.display().to_string())
            ));
        }
        out.push_str("        }\n    ]\n}\n\n");
    }
    out.push_str("authorization {\n    users: [\n");
    for user in &auth.users {
        let p = auth.permissions(user)?;
        out.push_str(&format!("        # {} (role {})\n", user.name, user.role));
        out.push_str(&user_entry(&user.public_key, &p, None));
    }
    for site in &auth.sites {
        let users: Vec<(Role, &str)> = site
            .users
            .iter()
            .map(|u| (u.role, u.inbox_prefix.as_str()))
            .collect();
        // Whoever on the hub may send the site's runners a request, and so wait for a reply
        // (the registry's router forwards with the caller's own reply subject).
        let callers: Vec<&str> = auth
            .users
            .iter()
            .filter(|u| matches!(u.role, Role::Admin | Role::Client))
            .map(|u| u.inbox_prefix.as_str())
            .collect();
        let hub = domain(auth.js_domain.as_deref().unwrap_or(""))?;
        let p = leaf_link_permissions(&ns, &hub, &users, &callers, &site.runtimes);
        out.push_str(&format!(
            "        # the leaf link of site {} (what its users may do)\n",
            site.site
        ));
        out.push_str(&user_entry(&site.public_key, &p, Some("LEAFNODE")));
    }
    out.push_str("    ]\n}\n");
    Ok(out)
}

/// One entry of the configuration's user list.
fn user_entry(public_key: &str, p: &Permissions, connection_type: Option<&str>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("            {}", q(s)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let types = connection_type
        .map(|t| format!("        allowed_connection_types: [{}]\n", q(t)))
        .unwrap_or_default();
    format!(
        "        {{\n        nkey: {}\n{types}        permissions: {{\n          publish: {{ allow: [\n{}\n          ] }}\n          subscribe: {{ allow: [\n{}\n          ] }}\n          allow_responses: {}\n        }}\n        }}\n",
        q(public_key),
        list(&p.publish),
        list(&p.subscribe),
        p.allow_responses,
    )
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
        "jetstream_domain": auth.hub.as_ref().map(|h| h.domain.as_str()).unwrap_or(""),
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
    // Written beside and renamed over: a failure leaves the old file whole, never half of it.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // `mode` applies only to a file created now; one that existed keeps its bits otherwise.
    let written = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io)
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
    fn a_leaf_site_gets_its_own_users_and_link_and_the_hub_a_user_for_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (hub_dir, site_dir) = (tmp.path().join("hub"), tmp.path().join("edge"));
        let opts = AuthOptions::new(Namespace::default());
        init(&hub_dir, &opts).unwrap();
        let site = LeafSiteOptions::new("edge");
        assert!(matches!(
            add_leaf_site(&hub_dir, &site_dir, &site),
            Err(AuthError::NotAHub { .. })
        ));

        let hub_opts = AuthOptions {
            leaf_port: Some(7422),
            force: true,
            ..opts
        };
        let hub = init(&hub_dir, &hub_opts).unwrap();
        assert_eq!(hub.js_domain.as_deref(), Some(DEFAULT_HUB_DOMAIN));
        let same = LeafSiteOptions::new(DEFAULT_HUB_DOMAIN);
        assert!(matches!(
            add_leaf_site(&hub_dir, &site_dir, &same),
            Err(AuthError::BadDomain { .. })
        ));
        let (hub, edge) = add_leaf_site(&hub_dir, &site_dir, &site).unwrap();
        let names: Vec<_> = edge.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["runner", "client"]);
        assert_eq!(edge.users[0].inbox_prefix, "_INBOX_edge_runner");
        let link = edge.hub.as_ref().unwrap();
        assert_eq!(link.url, "nats-leaf://127.0.0.1:7422");
        let ctx: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&edge.users[0].context).unwrap()).unwrap();
        assert_eq!(ctx["jetstream_domain"], "hub");

        let site_config = fs::read_to_string(&edge.server_config).unwrap();
        let seed = fs::read_to_string(&link.seed).unwrap();
        assert!(site_config.contains(seed.trim()), "the link's seed");
        assert_eq!(mode(&edge.server_config), 0o600);
        assert_eq!(mode(&link.seed), 0o600);
        assert!(site_config.contains("domain: \"edge\""));
        assert!(site_config.contains("$JS.hub.API.STREAM.INFO"));

        let hub_config = fs::read_to_string(&hub.server_config).unwrap();
        assert!(hub_config.contains("domain: \"hub\""));
        assert!(hub_config.contains("listen: \"127.0.0.1:7422\""));
        assert!(hub_config.contains(&hub.sites[0].public_key));
        assert!(hub_config.contains("allowed_connection_types: [\"LEAFNODE\"]"));
        assert!(!hub_config.contains(seed.trim()), "no site seed on the hub");
        assert_eq!(load(&hub_dir).unwrap(), hub);
        assert_eq!(load(&site_dir).unwrap(), edge);

        // Again without --force: refused, nothing changed; with it, a new link key.
        assert!(matches!(
            add_leaf_site(&hub_dir, &site_dir, &site),
            Err(AuthError::Exists { .. })
        ));
        assert_eq!(load(&hub_dir).unwrap(), hub);
        let again = LeafSiteOptions {
            force: true,
            ..site
        };
        let (hub2, _) = add_leaf_site(&hub_dir, &site_dir, &again).unwrap();
        assert_eq!(hub2.sites.len(), 1);
        assert_ne!(hub2.sites[0].public_key, hub.sites[0].public_key);

        // New keys for the hub keep its sites.
        let rekeyed = init(&hub_dir, &hub_opts).unwrap();
        assert_eq!(rekeyed.sites, hub2.sites);
        // The site's directory cannot be the hub's.
        assert!(matches!(
            add_leaf_site(&hub_dir, &hub_dir, &LeafSiteOptions::new("other")),
            Err(AuthError::BadDomain { .. })
        ));
    }

    #[test]
    fn a_site_whose_inboxes_are_a_hub_users_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let hub_dir = tmp.path().join("hub");
        let mut opts = AuthOptions::new(Namespace::default());
        opts.leaf_port = Some(7422);
        opts.clients = vec!["ci_client".into()];
        init(&hub_dir, &opts).unwrap();
        let err = add_leaf_site(
            &hub_dir,
            &tmp.path().join("ci"),
            &LeafSiteOptions::new("ci"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ci_client"), "{err}");
        assert!(!tmp.path().join("ci").exists(), "nothing written");
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
