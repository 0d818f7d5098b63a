//! Who may do what on the bus: the four roles of an Attune installation and the least NATS
//! permissions each one needs, derived from the same [`Namespace`] every component builds its
//! subjects with.
//!
//! Without permissions, anything that reaches the NATS server can register packs, change
//! defaults, rewrite the KV buckets runners trust, forge results, or join the runners' queue
//! group and answer invocations itself. A nats-server that gives each connection one of these
//! roles stops all of that:
//!
//! - [`Role::Admin`]: every registry operation, including those that change state, and pack
//!   uploads, and events from outside a sensor; otherwise what a client may do.
//! - [`Role::Registry`]: the service. It answers the registry API and the by-name router, and
//!   owns the JetStream resources: only it may create or update buckets, object stores and
//!   streams. It evaluates rules, pulling events through their one shared consumer.
//! - [`Role::Runner`]: serves `<prefix>.invoke.>` in the runners' queue group, pulls jobs,
//!   writes heartbeats and results, reads packs, runtimes and actions. It creates nothing but its
//!   durable consumers on the jobs stream.
//! - [`Role::Client`]: invokes by name or by subject, enqueues jobs, reads results by id, and
//!   calls the registry operations that only read.
//!
//! Every user also gets its own inbox prefix ([`inbox_prefix`]) and may subscribe only under it,
//! so no connection can read the replies meant for another user. JetStream push consumers (KV
//! watches, object reads) deliver to the connection's inbox, so they work with it unchanged.
//! Responders answer through `allow_responses`, which lets a connection publish once to the reply
//! subject of a request it received, and so needs no publish right on anyone's inbox.
//!
//! The lists name JetStream's own API subjects (`$JS.API.…`, `$KV.<bucket>.…`, `$O.<store>.…`,
//! `$JS.ACK.…`, `$JS.FC.…`), which are fixed by the NATS server and client libraries; the
//! streams behind KV buckets and object stores are `KV_<bucket>` and `OBJ_<store>`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::connect::JetStreamDomain;
use crate::jetstream::{kv_stream, Bucket, JS_API};
use crate::subject::{
    Namespace, RegistryOp, JS_ACK_PREFIX, REGISTRY_SERVICE, ROUTER_QUEUE_GROUP, RUNNER_QUEUE_GROUP,
    RUNNER_SERVICE, SERVICE_API, SERVICE_VERBS,
};

/// The part an identity plays in an installation; each has one fixed set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An operator: changes what is registered, and everything a client may do.
    Admin,
    /// The registry service, owner of every JetStream resource.
    Registry,
    /// A runner: serves invocations and jobs.
    Runner,
    /// A user or program that invokes actions and reads results.
    Client,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Registry, Role::Runner, Role::Client];

    /// The role's name, which is also the default user name that `attune auth init` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Registry => "registry",
            Role::Runner => "runner",
            Role::Client => "client",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// What a user in this role may publish and subscribe to, in namespace `ns`, when its inbox
    /// prefix is `inbox` (see [`inbox_prefix`]).
    pub fn permissions(self, ns: &Namespace, inbox: &str) -> Permissions {
        self.permissions_in(ns, inbox, &JetStreamDomain::local())
    }

    /// [`Role::permissions`] for a user that reaches the installation's JetStream through
    /// domain `js`: a runner or client on a leaf node, whose JetStream API requests are
    /// `$JS.<domain>.API.…` instead of `$JS.API.…`, and so are their KV writes. Object-store
    /// writes, stream subjects and acknowledgements keep their subjects whatever the domain.
    pub fn permissions_in(self, ns: &Namespace, inbox: &str, js: &JetStreamDomain) -> Permissions {
        let mut g = Grants::new(js);
        // Request replies come back on the user's own inboxes, and only there.
        g.subscribe(format!("{inbox}.>"));
        match self {
            Role::Admin => {
                client_grants(&mut g, ns);
                for op in RegistryOp::ALL.into_iter().filter(|op| op.changes_state()) {
                    g.publish(ns.registry(op));
                }
                // Pack uploads: the archive goes to the object store, then `pack.register`
                // names it by digest.
                let files = ns.object_pack_files();
                g.object_read(&files);
                g.object_write(&files);
                // Service discovery (`nats micro ls`, `$SRV.PING` and friends).
                g.publish(format!("{SERVICE_API}.>"));
                // `attune runtime verify`: ask the runners to verify again.
                g.publish(ns.runners_verify());
                // `attune event publish`: an event from outside a sensor (tests, webhooks).
                g.publish(ns.events_all());
                // `attune event list|show|watch`: ordered push consumers to the admin's inbox.
                // Not a client's: following a stream includes deleting consumers on it, and
                // deleting the registries' `attune-rules` would stop rule evaluation.
                let events = ns.stream_events();
                g.read_stream(&events);
                g.follow_stream(&events);
            }
            Role::Registry => registry_grants(&mut g, ns),
            Role::Runner => runner_grants(&mut g, ns),
            Role::Client => client_grants(&mut g, ns),
        }
        g.into_permissions(matches!(self, Role::Registry | Role::Runner))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What may cross the leaf node link of a site whose `users` (role and inbox prefix each) reach
/// the installation through JetStream domain `hub`, as the hub's user for that link states it.
///
/// Seen from the hub, what the link's user may publish is what the site may send in, and what
/// it may subscribe to is what the hub sends out to the site. Both are the union of the site
/// users' own permissions, so a site whose server is in other hands can do over its link
/// nothing its runners and clients could not, with two exceptions that nats-server imposes on
/// links: a subscription cannot be held to a queue group, so such a site could receive a copy
/// of every invocation of the versions its runners serve, where a runner gets only its share;
/// and `allow_responses` does not cross a link, so runners' replies need publish rights on the
/// inboxes of `callers`, the hub users whose requests they answer (admins and clients). Such a site could send
/// those users messages they did not ask for, on inbox subjects it would have to guess.
///
/// With `runtimes` given, the hub sends the site only the invocations of those runtimes (its
/// runners should serve no others), which also bounds what the first exception exposes.
pub fn leaf_link_permissions(
    ns: &Namespace,
    hub: &JetStreamDomain,
    users: &[(Role, &str)],
    callers: &[&str],
    runtimes: &[String],
) -> Permissions {
    let mut g = Grants::new(hub);
    // A leaf node forwards a reply only where its link may publish (`allow_responses` does
    // not cross a link), so the inboxes of the hub's users that invoke are granted outright.
    if users.iter().any(|(role, _)| *role == Role::Runner) {
        for inbox in callers {
            g.publish(format!("{inbox}.>"));
        }
    }
    for (role, inbox) in users {
        let p = role.permissions_in(ns, inbox, hub);
        for subject in p.publish {
            g.publish(subject);
        }
        // nats-server checks the subscriptions a leaf node forwards without their queue group,
        // so a grant limited to one group would stop the site's runners from being reached.
        for subject in p.subscribe {
            let subject = subject.split_once(' ').map_or(subject.as_str(), |(s, _)| s);
            if subject == ns.invoke_all() && !runtimes.is_empty() {
                for runtime in runtimes {
                    g.subscribe(ns.invoke_runtime(runtime));
                }
            } else {
                g.subscribe(subject.to_string());
            }
        }
    }
    // `allow_responses` does not apply to links (above); the callers' inboxes stand for it.
    g.into_permissions(false)
}

/// The inbox prefix of user `user` (`_INBOX_client`): replies to its requests arrive under it,
/// and it is the only inbox the user may subscribe to. Clients set it with
/// `ConnectOptions::custom_inbox_prefix`; `nats` CLI contexts carry it as `inbox_prefix`.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// The subjects one user may publish and subscribe to, as a nats-server `permissions` block
/// states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Subjects the user may publish to (wildcards allowed).
    pub publish: Vec<String>,
    /// Subjects the user may subscribe to; `"<subject> <queue>"` allows only that queue group.
    pub subscribe: Vec<String>,
    /// Whether the user may answer requests it received (once each), whatever their reply
    /// subject; responders need this instead of a publish right on everyone's inboxes.
    pub allow_responses: bool,
}

/// The stream behind object store `store`.
fn object_stream(store: &str) -> String {
    format!("OBJ_{store}")
}

/// Permission lists under construction, without duplicates, in the order rules were added.
struct Grants {
    /// The JetStream API prefix requests go to: `$JS.API`, or `$JS.<domain>.API`.
    api_prefix: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Grants {
    fn new(js: &JetStreamDomain) -> Self {
        Grants {
            api_prefix: js.api_prefix(),
            publish: Vec::new(),
            subscribe: Vec::new(),
        }
    }

    fn publish(&mut self, subject: String) {
        if !self.publish.contains(&subject) {
            self.publish.push(subject);
        }
    }

    fn subscribe(&mut self, subject: String) {
        if !self.subscribe.contains(&subject) {
            self.subscribe.push(subject);
        }
    }

    /// One JetStream API request: `$JS.API.<verb>.<target>` (in the user's domain).
    fn api(&mut self, verb: &str, target: &str) {
        self.publish(format!("{}.{verb}.{target}", self.api_prefix));
    }

    /// Look at a stream and read single messages from it: stream info (how the clients open a
    /// bucket or store), direct gets (KV `get`, object info) and the non-direct fallback.
    fn read_stream(&mut self, stream: &str) {
        self.api("STREAM.INFO", stream);
        self.api("DIRECT.GET", stream);
        self.api("DIRECT.GET", &format!("{stream}.>"));
        self.api("STREAM.MSG.GET", stream);
    }

    /// Read a stream through ordered push consumers (KV watch and key listing, object
    /// reads): create them, with or without a name, delete the one being replaced when the
    /// client recreates it, and answer the server's flow control.
    fn follow_stream(&mut self, stream: &str) {
        self.api("CONSUMER.CREATE", stream);
        self.api("CONSUMER.CREATE", &format!("{stream}.>"));
        self.api("CONSUMER.DELETE", &format!("{stream}.*"));
        self.publish(format!("$JS.FC.{stream}.>"));
    }

    /// Create and update a stream (and so the bucket or store it holds).
    fn own_stream(&mut self, stream: &str) {
        self.api("STREAM.CREATE", stream);
        self.api("STREAM.UPDATE", stream);
    }

    /// `get` (and open) KV bucket `bucket`.
    fn kv_read(&mut self, bucket: &str) {
        self.read_stream(&kv_stream(bucket));
    }

    /// `get`, `watch` and list the keys of KV bucket `bucket`.
    fn kv_follow(&mut self, bucket: &str) {
        self.kv_read(bucket);
        self.follow_stream(&kv_stream(bucket));
    }

    /// `put` and `delete` in KV bucket `bucket`. Through a JetStream domain, the client
    /// libraries send them under the domain's API prefix (`$JS.<domain>.API.$KV.<bucket>.…`).
    fn kv_write(&mut self, bucket: &str) {
        if self.api_prefix == JS_API {
            self.publish(format!("$KV.{bucket}.>"));
        } else {
            self.publish(format!("{}.$KV.{bucket}.>", self.api_prefix));
        }
    }

    /// Open object store `store` and read its objects.
    fn object_read(&mut self, store: &str) {
        let stream = object_stream(store);
        self.read_stream(&stream);
        self.follow_stream(&stream);
    }

    /// Put objects into `store`: chunks and metadata, and the purge of the chunks an object
    /// replaces.
    fn object_write(&mut self, store: &str) {
        self.publish(format!("$O.{store}.>"));
        self.api("STREAM.PURGE", &object_stream(store));
    }

    /// Answer micro-service discovery for service `name` (every instance of it).
    fn discoverable_as(&mut self, name: &str) {
        for verb in SERVICE_VERBS {
            self.subscribe(format!("{SERVICE_API}.{verb}"));
            self.subscribe(format!("{SERVICE_API}.{verb}.{name}"));
            self.subscribe(format!("{SERVICE_API}.{verb}.{name}.*"));
        }
    }

    fn into_permissions(self, allow_responses: bool) -> Permissions {
        Permissions {
            publish: self.publish,
            subscribe: self.subscribe,
            allow_responses,
        }
    }
}

/// A client: invoke (by name, by subject, as a job), read-only registry operations, results.
fn client_grants(g: &mut Grants, ns: &Namespace) {
    g.publish(ns.action_all());
    g.publish(ns.invoke_all());
    g.publish(ns.jobs_all());
    for op in RegistryOp::ALL.into_iter().filter(|op| !op.changes_state()) {
        g.publish(ns.registry(op));
    }
    // Resolution reads the action's route (one read), or the action and its runtime to
    // explain it (`attune resolve`).
    g.kv_read(&Bucket::Routes.name(ns));
    g.kv_read(&Bucket::Actions.name(ns));
    g.kv_read(&Bucket::Runtimes.name(ns));
    // Results: the record by id, the list of ids, and replies too large for a message.
    g.kv_follow(&Bucket::Results.name(ns));
    g.object_read(&ns.object_results_files());
    g.subscribe(ns.results_all());
    // Live output of executions (`attune invoke --follow`, `attune execution tail`).
    g.subscribe(ns.output_all());
    // Execution history (`attune execution list|show`): ordered push consumers to the user's
    // inbox. The stream has no durable consumer a reader could disturb.
    let executions = ns.stream_executions();
    g.read_stream(&executions);
    g.follow_stream(&executions);
}

/// The registry: API and router, publishing state, owning every JetStream resource.
fn registry_grants(g: &mut Grants, ns: &Namespace) {
    for op in RegistryOp::ALL {
        g.subscribe(ns.registry(op));
    }
    g.subscribe(format!("{} {ROUTER_QUEUE_GROUP}", ns.action_all()));
    g.discoverable_as(REGISTRY_SERVICE);
    // The router forwards to the version subject, or enqueues for `Attune-Async`.
    g.publish(ns.invoke_all());
    g.publish(ns.jobs_all());
    // The records of what it refused before any runner (routing, a rule's unqueueable job).
    g.publish(ns.executions_all());
    // Creating a KV bucket looks at the account's JetStream limits first.
    g.publish(format!("{}.INFO", g.api_prefix));
    for bucket in Bucket::ALL {
        let name = bucket.name(ns);
        g.own_stream(&kv_stream(&name));
        g.kv_follow(&name);
    }
    // The registry's projection; heartbeats and results are written by runners.
    for bucket in [
        Bucket::Runtimes,
        Bucket::Actions,
        Bucket::Packs,
        Bucket::Routes,
    ] {
        g.kv_write(&bucket.name(ns));
    }
    let pack_files = ns.object_pack_files();
    g.own_stream(&object_stream(&pack_files));
    g.object_read(&pack_files);
    g.object_write(&pack_files);
    let results_files = ns.object_results_files();
    g.own_stream(&object_stream(&results_files));
    g.read_stream(&object_stream(&results_files));
    let jobs = ns.stream_jobs();
    g.own_stream(&jobs);
    g.read_stream(&jobs);
    // The depth of each version's queue, for its metrics.
    g.api("CONSUMER.LIST", &jobs);
    let executions = ns.stream_executions();
    g.own_stream(&executions);
    g.read_stream(&executions);
    // Rules: the events stream and the registries' shared consumer of it, pulled and acked.
    let events = ns.stream_events();
    g.own_stream(&events);
    g.read_stream(&events);
    let rules = ns.rules_consumer();
    g.api("CONSUMER.INFO", &format!("{events}.{rules}"));
    g.api("CONSUMER.CREATE", &format!("{events}.{rules}"));
    g.api("CONSUMER.CREATE", &format!("{events}.{rules}.>"));
    g.api("CONSUMER.DURABLE.CREATE", &format!("{events}.{rules}"));
    g.api("CONSUMER.MSG.NEXT", &format!("{events}.{rules}"));
    g.publish(format!("{JS_ACK_PREFIX}{events}.{rules}.>"));
}

/// A runner: serve its versions, pull jobs, heartbeat, write results, read packs.
fn runner_grants(g: &mut Grants, ns: &Namespace) {
    // Only in the runners' queue group: one request reaches one runner, never a bystander.
    g.subscribe(format!("{} {RUNNER_QUEUE_GROUP}", ns.invoke_all()));
    // Re-verification on demand: every runner hears it (no queue group) and answers once.
    g.subscribe(ns.runners_verify());
    g.discoverable_as(RUNNER_SERVICE);
    for bucket in [Bucket::Runtimes, Bucket::Actions, Bucket::Packs] {
        g.kv_follow(&bucket.name(ns));
    }
    // Sensor leases are taken, renewed and released by revision, so they are read as well.
    for bucket in [Bucket::Runners, Bucket::Results, Bucket::Sensors] {
        let name = bucket.name(ns);
        g.kv_read(&name);
        g.kv_write(&name);
    }
    // Concurrency slots: taken and released by revision, and watched for ones coming free.
    let slots = Bucket::Slots.name(ns);
    g.kv_follow(&slots);
    g.kv_write(&slots);
    // The events of the sensors it runs, the records of what it executes, its live output.
    g.publish(ns.events_all());
    g.publish(ns.executions_all());
    g.publish(ns.output_all());
    g.object_read(&ns.object_pack_files());
    let results_files = ns.object_results_files();
    g.object_read(&results_files);
    g.object_write(&results_files);
    g.publish(ns.results_all());
    // Jobs: open the stream, create and look up its durable consumers, pull, acknowledge. The
    // acknowledgement subjects are granted outright: a running job sends progress
    // acknowledgements before its final one, more answers than `allow_responses` permits.
    let jobs = ns.stream_jobs();
    g.api("STREAM.INFO", &jobs);
    g.api("CONSUMER.INFO", &format!("{jobs}.*"));
    g.api("CONSUMER.CREATE", &format!("{jobs}.>"));
    g.api("CONSUMER.DURABLE.CREATE", &format!("{jobs}.*"));
    g.api("CONSUMER.MSG.NEXT", &format!("{jobs}.*"));
    g.publish(format!("{JS_ACK_PREFIX}{jobs}.>"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(role: Role) -> Permissions {
        role.permissions(&Namespace::default(), &inbox_prefix(role.as_str()))
    }

    #[test]
    fn only_admin_may_change_the_registry() {
        let ns = Namespace::default();
        for op in RegistryOp::ALL {
            let subject = ns.registry(op);
            assert!(
                perms(Role::Admin).publish.contains(&subject),
                "admin may call {op}"
            );
            assert_eq!(
                perms(Role::Client).publish.contains(&subject),
                !op.changes_state(),
                "client and {op}"
            );
            assert!(
                !perms(Role::Runner).publish.contains(&subject),
                "runner and {op}"
            );
        }
    }

    #[test]
    fn only_the_registry_creates_jetstream_resources() {
        for role in Role::ALL {
            let creates = perms(role).publish.iter().any(|s| {
                s.starts_with("$JS.API.STREAM.CREATE") || s.starts_with("$JS.API.STREAM.UPDATE")
            });
            assert_eq!(creates, role == Role::Registry, "{role}");
        }
    }

    #[test]
    fn every_user_subscribes_only_to_its_own_inbox() {
        for role in Role::ALL {
            let p = role.permissions(&Namespace::default(), "_INBOX_someone");
            let inboxes: Vec<_> = p
                .subscribe
                .iter()
                .filter(|s| s.starts_with("_INBOX"))
                .collect();
            assert_eq!(inboxes, ["_INBOX_someone.>"], "{role}");
        }
    }

    #[test]
    fn only_runners_serve_invocations_and_only_in_their_queue_group() {
        for role in Role::ALL {
            let serves: Vec<_> = perms(role)
                .subscribe
                .into_iter()
                .filter(|s| s.starts_with("attune.invoke"))
                .collect();
            if role == Role::Runner {
                assert_eq!(serves, ["attune.invoke.> attune"]);
            } else {
                assert!(serves.is_empty(), "{role}: {serves:?}");
            }
        }
    }

    #[test]
    fn results_are_written_by_runners_alone() {
        for role in Role::ALL {
            let p = perms(role);
            let writes = p.publish.iter().any(|s| {
                s == "attune.results.>"
                    || s == "$KV.attune-results.>"
                    || s.starts_with("$O.attune-results-files")
            });
            assert_eq!(writes, role == Role::Runner, "{role}");
        }
    }

    #[test]
    fn responders_answer_without_rights_on_inboxes() {
        for role in Role::ALL {
            let p = perms(role);
            assert_eq!(
                p.allow_responses,
                matches!(role, Role::Registry | Role::Runner),
                "{role}"
            );
            assert!(!p.publish.iter().any(|s| s.starts_with("_INBOX")), "{role}");
        }
    }

    #[test]
    fn a_user_behind_a_domain_asks_that_domains_api_and_writes_kv_through_it() {
        let hub = JetStreamDomain::named("hub").unwrap();
        let p = Role::Runner.permissions_in(&Namespace::default(), "_INBOX_r", &hub);
        assert!(p
            .publish
            .contains(&"$JS.hub.API.STREAM.INFO.KV_attune-runtimes".to_string()));
        assert!(p
            .publish
            .contains(&"$JS.hub.API.$KV.attune-runners.>".to_string()));
        assert!(p.publish.contains(&"$JS.ACK.ATTUNE_JOBS.>".to_string()));
        assert!(
            !p.publish
                .iter()
                .any(|s| s.starts_with("$JS.API") || s.starts_with("$KV.")),
            "{:?}",
            p.publish
        );
    }

    #[test]
    fn a_leaf_link_carries_its_users_grants_without_queue_groups_and_answers_callers() {
        let ns = Namespace::default();
        let hub = JetStreamDomain::named("hub").unwrap();
        let p = leaf_link_permissions(
            &ns,
            &hub,
            &[
                (Role::Runner, "_INBOX_edge_runner"),
                (Role::Client, "_INBOX_edge_client"),
            ],
            &["_INBOX_client", "_INBOX_registry"],
            &[],
        );
        assert!(p.subscribe.contains(&"attune.invoke.>".to_string()));
        assert!(
            !p.subscribe.iter().any(|s| s.contains(' ')),
            "{:?}",
            p.subscribe
        );
        for inbox in ["_INBOX_edge_runner.>", "_INBOX_edge_client.>"] {
            assert!(p.subscribe.contains(&inbox.to_string()), "{inbox}");
        }
        for caller in ["_INBOX_client.>", "_INBOX_registry.>"] {
            assert!(p.publish.contains(&caller.to_string()), "{caller}");
            assert!(!p.subscribe.contains(&caller.to_string()), "{caller}");
        }
        // Replies go by the granted inboxes; `allow_responses` would not cross a link anyway.
        assert!(!p.allow_responses);
        // Nothing a registry or an admin does crosses it.
        assert!(!p.subscribe.iter().any(|s| s.starts_with("attune.registry")));
        assert!(!p.publish.iter().any(|s| s.contains("STREAM.CREATE")
            || s.contains("STREAM.DELETE")
            || s.contains("$KV.attune-actions")
            || s.contains("pack.register")));
        // A site of clients only answers nobody.
        let clients_only = leaf_link_permissions(
            &ns,
            &hub,
            &[(Role::Client, "_INBOX_c")],
            &["_INBOX_client"],
            &[],
        );
        assert!(!clients_only
            .publish
            .contains(&"_INBOX_client.>".to_string()));
        // A site limited to shell and node hears only their invocations.
        let limited = leaf_link_permissions(
            &ns,
            &hub,
            &[(Role::Runner, "_INBOX_r")],
            &[],
            &["shell".to_string(), "node".to_string()],
        );
        let invokes: Vec<_> = limited
            .subscribe
            .iter()
            .filter(|s| s.starts_with("attune.invoke"))
            .collect();
        assert_eq!(invokes, ["attune.invoke.shell.>", "attune.invoke.node.>"]);
    }

    #[test]
    fn names_follow_the_prefix() {
        let ns = Namespace::new("acme.fx").unwrap();
        let p = Role::Runner.permissions(&ns, "_INBOX_r");
        assert!(p.subscribe.contains(&"acme.fx.invoke.> attune".to_string()));
        assert!(p.publish.contains(&"$JS.ACK.ACME_FX_JOBS.>".to_string()));
        assert!(p.publish.contains(&"$KV.acme-fx-runners.>".to_string()));
        assert!(!p.publish.iter().any(|s| s.contains("attune-")));
    }
}
