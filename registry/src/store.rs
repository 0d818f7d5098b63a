//! The redb store: the registry's source of truth.
//!
//! KV and the object store are only a projection of this file, republished from it in full, so
//! everything a republish needs is here — including each pack's archive bytes, because the
//! directory a pack was registered from may change or vanish.
//!
//! Every change is one write transaction: a pack is upserted whole or not at all, and the
//! invariants (at most one default per runtime, no runtime removed while another pack uses it)
//! are checked inside the transaction, so a failed check leaves nothing behind.
//!
//! redb is blocking; callers on the async side run these methods through
//! [`tokio::task::spawn_blocking`] (see [`crate::registry`]). Transactions are small: the whole
//! registry is a few hundred rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use attune_nats::version::IMPLICIT_VERSION;
use attune_nats::{
    parse_version, Action, PackMeta, Rule, Runtime, RuntimeVersion, Sensor, TriggerType, VersionKey,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pack::LoadedPack;

/// Pack metadata by pack ref.
const PACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("packs");
/// Pack archive bytes by digest; republishing the object store reads them from here.
const ARCHIVES: TableDefinition<&str, &[u8]> = TableDefinition::new("pack_archives");
/// Runtimes by name, without their versions (those live in [`VERSIONS`]).
const RUNTIMES: TableDefinition<&str, &[u8]> = TableDefinition::new("runtimes");
/// Runtime versions keyed by (runtime, major, minor, patch, version name), so one runtime's
/// versions are a contiguous, numerically ordered range.
const VERSIONS: TableDefinition<(&str, u64, u64, u64, &str), &[u8]> =
    TableDefinition::new("runtime_versions");
/// Actions by ref.
const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
/// Sensors by ref.
const SENSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("sensors");
/// Rule ref → JSON [`Rule`].
const RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("rules");
/// Rule ref → whether the operator enabled it (`rule.set_enabled`); outlives re-registrations.
const RULE_CHOICES: TableDefinition<&str, bool> = TableDefinition::new("rule_choices");
/// Trigger type ref → JSON [`TriggerType`].
const TRIGGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("triggers");
/// Sensor ref → whether the operator enabled it (`sensor.set_enabled`); outlives re-registrations.
const SENSOR_CHOICES: TableDefinition<&str, bool> = TableDefinition::new("sensor_choices");
/// Operator choices by (runtime, version): they outlast re-registration of the pack, so a
/// restart that re-reads the pack directories does not undo `attune runtime default …`.
const CHOICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("operator_choices");

/// How often a still-available version's `verified_at` is refreshed at most. Runners heartbeat
/// every few seconds; rewriting (and republishing) the runtime on each beat would make every
/// runtime watcher churn for no information.
pub const VERIFIED_AT_REFRESH: time::Duration = time::Duration::seconds(30);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, already open elsewhere).
    #[error("registry database: {0}")]
    Db(#[from] redb::Error),
    /// A stored row could not be decoded (written by an incompatible version).
    #[error("registry database row {what}: {source}")]
    Codec {
        /// Which row.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The named thing is not registered.
    #[error("{0}")]
    NotFound(String),
    /// The change would break something registered.
    #[error("{0}")]
    Conflict(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// An operator's overrides for one version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Choice {
    /// Set by `version.set_enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    /// Set by `version.set_default` (cleared on the runtime's other versions).
    #[serde(default)]
    default: bool,
}

/// Everything registered, read in one transaction: what publication mirrors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Packs by ref.
    pub packs: Vec<PackMeta>,
    /// Runtimes by name, each with its versions in version order.
    pub runtimes: Vec<Runtime>,
    /// Actions by ref.
    pub actions: Vec<Action>,
    /// Sensors by ref.
    pub sensors: Vec<Sensor>,
    /// Rules by ref.
    pub rules: Vec<Rule>,
    /// Trigger types by ref.
    pub triggers: Vec<TriggerType>,
}

/// Which versions live runners serve now: (runtime, version) → newest report time (RFC 3339).
pub type Availability = HashMap<VersionKey, Report>;

/// What live runners report about one version they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The newest heartbeat that listed it.
    pub at: OffsetDateTime,
    /// What their interpreters report (`3.12.4`, `3.13.0-rc1`), deduplicated and sorted.
    pub detected: std::collections::BTreeSet<String>,
}

impl Report {
    /// A report at `at` with the given detected versions.
    pub fn new<'a>(at: OffsetDateTime, detected: impl IntoIterator<Item = &'a str>) -> Self {
        Report {
            at,
            detected: detected.into_iter().map(str::to_string).collect(),
        }
    }
}

/// The redb database. Cheap to clone; all clones share one open file.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("model types always serialise")
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
        what: what.to_string(),
        source,
    })
}

/// The numeric key parts of a version name; the implicit `default` version sorts as 0.0.0.
fn version_key(name: &str) -> (u64, u64, u64) {
    if name == IMPLICIT_VERSION {
        return (0, 0, 0);
    }
    parse_version(name)
        .map(|v| (v.major, v.minor, v.patch))
        .unwrap_or((0, 0, 0))
}

impl Store {
    /// Opens (or creates) the database file and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(PACKS)?;
            tx.open_table(ARCHIVES)?;
            tx.open_table(RUNTIMES)?;
            tx.open_table(VERSIONS)?;
            tx.open_table(ACTIONS)?;
            tx.open_table(SENSORS)?;
            tx.open_table(RULES)?;
            tx.open_table(RULE_CHOICES)?;
            tx.open_table(TRIGGERS)?;
            tx.open_table(SENSOR_CHOICES)?;
            tx.open_table(CHOICES)?;
        }
        tx.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Everything registered, consistently.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for row in tx.open_table(PACKS)?.iter()? {
            let (k, v) = row?;
            snap.packs.push(decode(k.value(), v.value())?);
        }
        let mut versions: BTreeMap<String, Vec<RuntimeVersion>> = BTreeMap::new();
        for row in tx.open_table(VERSIONS)?.iter()? {
            let (k, v) = row?;
            let key = k.value();
            versions
                .entry(key.0.to_string())
                .or_default()
                .push(decode(key.4, v.value())?);
        }
        for row in tx.open_table(RUNTIMES)?.iter()? {
            let (k, v) = row?;
            let mut rt: Runtime = decode(k.value(), v.value())?;
            rt.versions = versions.remove(&rt.name).unwrap_or_default();
            snap.runtimes.push(rt);
        }
        for row in tx.open_table(ACTIONS)?.iter()? {
            let (k, v) = row?;
            snap.actions.push(decode(k.value(), v.value())?);
        }
        for row in tx.open_table(SENSORS)?.iter()? {
            let (k, v) = row?;
            snap.sensors.push(decode(k.value(), v.value())?);
        }
        for row in tx.open_table(RULES)?.iter()? {
            let (k, v) = row?;
            snap.rules.push(decode(k.value(), v.value())?);
        }
        for row in tx.open_table(TRIGGERS)?.iter()? {
            let (k, v) = row?;
            snap.triggers.push(decode(k.value(), v.value())?);
        }
        Ok(snap)
    }

    /// The archive bytes stored under `digest`.
    pub fn archive(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ARCHIVES)?;
        let bytes = table.get(digest)?.map(|g| g.value().to_vec());
        Ok(bytes)
    }

    /// Registers `pack` (new or again): its runtimes, versions, actions and sensors replace the
    /// previous registration; what the YAML no longer has is deleted. Live state (`available`,
    /// `verified_at`) and operator choices carry over for versions that remain.
    pub fn upsert_pack(
        &self,
        pack: &LoadedPack,
        digest: &str,
        archive: &[u8],
        now: OffsetDateTime,
    ) -> Result<PackMeta, StoreError> {
        let mut meta = pack.meta.clone();
        meta.digest = digest.to_string();
        meta.registered_at = Some(now);
        let pack_ref = meta.reference.clone();

        let tx = self.db.begin_write()?;
        let old: Option<PackMeta> = get_json(&tx, PACKS, &pack_ref)?;
        if let Some(old) = &old {
            // Same content, same registration: a restart that re-reads unchanged pack
            // directories must not look like a change to everyone watching `attune-packs`.
            if old.digest == digest {
                meta.registered_at = old.registered_at;
            }
            let kept: BTreeSet<&str> = meta.runtimes.iter().map(String::as_str).collect();
            let dropped: Vec<&str> = old
                .runtimes
                .iter()
                .map(String::as_str)
                .filter(|r| !kept.contains(r))
                .collect();
            check_unused(&tx, &pack_ref, &dropped)?;
            for name in dropped {
                delete_runtime(&tx, name)?;
            }
        }

        for rt in &pack.runtimes {
            write_runtime(&tx, rt)?;
        }

        replace_owned(&tx, ACTIONS, &pack_ref, &pack.actions, |a| &a.reference)?;
        let mut sensors = pack.sensors.clone();
        apply_choices(&tx, SENSOR_CHOICES, &mut sensors)?;
        // Runners start sensors from the pack's metadata: it carries the operator's choices too.
        meta.sensor_specs = sensors.clone();
        replace_owned(&tx, SENSORS, &pack_ref, &sensors, |s| &s.reference)?;
        replace_owned(&tx, TRIGGERS, &pack_ref, &pack.triggers, |t| &t.reference)?;
        let mut rules = pack.rules.clone();
        apply_choices(&tx, RULE_CHOICES, &mut rules)?;
        replace_owned(&tx, RULES, &pack_ref, &rules, |r| &r.reference)?;

        tx.open_table(ARCHIVES)?.insert(digest, archive)?;
        tx.open_table(PACKS)?
            .insert(pack_ref.as_str(), encode(&meta).as_slice())?;
        if let Some(old) = &old {
            if old.digest != digest {
                drop_archive_if_unused(&tx, &old.digest)?;
            }
        }
        tx.commit()?;
        Ok(meta)
    }

    /// Removes a pack and everything it defined. Refused (conflict) while another pack's actions
    /// or sensors use one of its runtimes.
    pub fn remove_pack(&self, pack_ref: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let meta: PackMeta = get_json(&tx, PACKS, pack_ref)?
            .ok_or_else(|| StoreError::NotFound(format!("no pack \"{pack_ref}\" is registered")))?;
        let runtimes: Vec<&str> = meta.runtimes.iter().map(String::as_str).collect();
        check_unused(&tx, pack_ref, &runtimes)?;
        for name in runtimes {
            delete_runtime(&tx, name)?;
        }
        tx.open_table(ACTIONS)?
            .retain(|_, v| !owned_by(v, pack_ref))?;
        tx.open_table(SENSORS)?
            .retain(|_, v| !owned_by(v, pack_ref))?;
        tx.open_table(RULES)?
            .retain(|_, v| !owned_by(v, pack_ref))?;
        tx.open_table(TRIGGERS)?
            .retain(|_, v| !owned_by(v, pack_ref))?;
        tx.open_table(PACKS)?.remove(pack_ref)?;
        drop_archive_if_unused(&tx, &meta.digest)?;
        tx.commit()?;
        Ok(())
    }

    /// Makes `version` the only default of `runtime` (a name, not an alias), and remembers the
    /// choice across re-registrations.
    pub fn set_default(&self, runtime: &str, version: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        require_version(&tx, runtime, version)?;
        {
            let mut choices = tx.open_table(CHOICES)?;
            let mut updates = Vec::new();
            for row in choices.iter()? {
                let (k, v) = row?;
                let (rt, ver) = k.value();
                if rt == runtime {
                    let mut c: Choice = decode(ver, v.value())?;
                    c.default = ver == version;
                    updates.push((ver.to_string(), c));
                }
            }
            if !updates.iter().any(|(v, _)| v == version) {
                updates.push((
                    version.to_string(),
                    Choice {
                        default: true,
                        ..Choice::default()
                    },
                ));
            }
            for (ver, c) in updates {
                choices.insert((runtime, ver.as_str()), encode(&c).as_slice())?;
            }
        }
        update_versions(&tx, runtime, |v| {
            v.is_default = v.version == version;
        })?;
        tx.commit()?;
        Ok(())
    }

    /// Enables or disables one version, and remembers the choice across re-registrations.
    pub fn set_enabled(
        &self,
        runtime: &str,
        version: &str,
        enabled: bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        require_version(&tx, runtime, version)?;
        {
            let mut choices = tx.open_table(CHOICES)?;
            let mut c: Choice = match choices.get((runtime, version))? {
                Some(g) => decode(version, g.value())?,
                None => Choice::default(),
            };
            c.enabled = Some(enabled);
            choices.insert((runtime, version), encode(&c).as_slice())?;
        }
        update_versions(&tx, runtime, |v| {
            if v.version == version {
                v.enabled = enabled;
            }
        })?;
        tx.commit()?;
        Ok(())
    }

    /// Enables or disables rule `reference`, and remembers the choice across re-registrations.
    pub fn set_rule_enabled(&self, reference: &str, enabled: bool) -> Result<Rule, StoreError> {
        let tx = self.db.begin_write()?;
        let rule: Rule = set_enabled(&tx, RULES, RULE_CHOICES, reference, enabled)?;
        tx.commit()?;
        Ok(rule)
    }

    /// Enables or disables sensor `reference` (in its pack's metadata too, which runners start
    /// sensors from), and remembers the choice across re-registrations. Returns the sensor and
    /// its pack's new metadata, to publish.
    pub fn set_sensor_enabled(
        &self,
        reference: &str,
        enabled: bool,
    ) -> Result<(Sensor, PackMeta), StoreError> {
        let tx = self.db.begin_write()?;
        let sensor: Sensor = set_enabled(&tx, SENSORS, SENSOR_CHOICES, reference, enabled)?;
        let mut meta: PackMeta = get_json(&tx, PACKS, &sensor.pack)?.ok_or_else(|| {
            StoreError::NotFound(format!("no pack \"{}\" is registered", sensor.pack))
        })?;
        for s in &mut meta.sensor_specs {
            if s.reference == reference {
                s.enabled = enabled;
            }
        }
        tx.open_table(PACKS)?
            .insert(sensor.pack.as_str(), encode(&meta).as_slice())?;
        tx.commit()?;
        Ok((sensor, meta))
    }

    /// Records which versions live runners serve. A version not in `live` becomes unavailable
    /// (its last `verified_at` stays, as history). `verified_at` of a version that stays available
    /// moves forward only every [`VERIFIED_AT_REFRESH`]. Returns whether anything changed.
    pub fn set_availability(&self, live: &Availability) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let mut changed = false;
        {
            let mut table = tx.open_table(VERSIONS)?;
            let mut updates = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let key = k.value();
                let mut ver: RuntimeVersion = decode(key.4, v.value())?;
                let report = live.get(&VersionKey::new(key.0, key.4));
                let before = (
                    ver.available,
                    ver.verified_at,
                    ver.detected_versions.clone(),
                );
                ver.available = report.is_some();
                ver.detected_versions = report
                    .map(|r| r.detected.iter().cloned().collect())
                    .unwrap_or_default();
                if let Some(&Report { at, .. }) = report {
                    let refresh = match ver.verified_at {
                        None => true,
                        Some(old) => !before.0 || at - old >= VERIFIED_AT_REFRESH,
                    };
                    if refresh {
                        ver.verified_at = Some(at);
                    }
                }
                if (ver.available, &ver.verified_at, &ver.detected_versions)
                    != (before.0, &before.1, &before.2)
                {
                    let owned = (key.0.to_string(), key.1, key.2, key.3, key.4.to_string());
                    updates.push((owned, ver));
                }
            }
            for ((rt, a, b, c, name), ver) in updates {
                changed = true;
                table.insert(
                    (rt.as_str(), a, b, c, name.as_str()),
                    encode(&ver).as_slice(),
                )?;
            }
        }
        if changed {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(changed)
    }
}

fn get_json<T: DeserializeOwned>(
    tx: &WriteTransaction,
    def: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let table = tx.open_table(def)?;
    let value = table.get(key)?;
    value.map(|g| decode(key, g.value())).transpose()
}

/// What an operator can enable or disable by ref (rules, sensors), a choice that outlives
/// re-registrations of its pack.
trait Toggle: Serialize + serde::de::DeserializeOwned {
    /// What messages call it.
    const WHAT: &'static str;
    fn reference(&self) -> &str;
    fn set_enabled(&mut self, enabled: bool);
}

impl Toggle for Rule {
    const WHAT: &'static str = "rule";
    fn reference(&self) -> &str {
        &self.reference
    }
    fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }
}

impl Toggle for Sensor {
    const WHAT: &'static str = "sensor";
    fn reference(&self) -> &str {
        &self.reference
    }
    fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }
}

/// Applies the operator's remembered choices in `choices` to `items` being registered.
fn apply_choices<T: Toggle>(
    tx: &WriteTransaction,
    choices: TableDefinition<&str, bool>,
    items: &mut [T],
) -> Result<(), StoreError> {
    let choices = tx.open_table(choices)?;
    for item in items {
        if let Some(enabled) = choices.get(item.reference())? {
            item.set_enabled(enabled.value());
        }
    }
    Ok(())
}

/// Sets `enabled` on row `reference` of `def` and remembers the choice in `choices`.
fn set_enabled<T: Toggle>(
    tx: &WriteTransaction,
    def: TableDefinition<&str, &[u8]>,
    choices: TableDefinition<&str, bool>,
    reference: &str,
    enabled: bool,
) -> Result<T, StoreError> {
    let what = T::WHAT;
    let mut item: T = get_json(tx, def, reference)?
        .ok_or_else(|| StoreError::NotFound(format!("no {what} \"{reference}\" is registered")))?;
    item.set_enabled(enabled);
    tx.open_table(def)?
        .insert(reference, encode(&item).as_slice())?;
    tx.open_table(choices)?.insert(reference, enabled)?;
    Ok(item)
}

/// Makes `items` the rows of `pack_ref` in `def`: its rows not among them are deleted, the
/// others written. Rows of other packs are untouched.
fn replace_owned<T: Serialize>(
    tx: &WriteTransaction,
    def: TableDefinition<&str, &[u8]>,
    pack_ref: &str,
    items: &[T],
    reference: impl Fn(&T) -> &String,
) -> Result<(), StoreError> {
    let wanted: BTreeSet<&str> = items.iter().map(|i| reference(i).as_str()).collect();
    tx.open_table(def)?
        .retain(|k, v| !owned_by(v, pack_ref) || wanted.contains(k))?;
    let mut table = tx.open_table(def)?;
    for item in items {
        table.insert(reference(item).as_str(), encode(item).as_slice())?;
    }
    Ok(())
}

/// Whether an action, sensor or rule row belongs to `pack`. Undecodable rows are kept (the caller
/// retains what this returns false for), never silently dropped.
fn owned_by(row: &[u8], pack: &str) -> bool {
    #[derive(Deserialize)]
    struct Owner<'a> {
        #[serde(borrow)]
        pack: &'a str,
    }
    serde_json::from_slice::<Owner>(row).is_ok_and(|o| o.pack == pack)
}

/// Refuses to drop `runtimes` of `pack` while other packs' actions or sensors use them.
fn check_unused(tx: &WriteTransaction, pack: &str, runtimes: &[&str]) -> Result<(), StoreError> {
    if runtimes.is_empty() {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct User {
        #[serde(rename = "ref")]
        reference: String,
        pack: String,
        runtime: String,
    }
    let mut users = Vec::new();
    for def in [ACTIONS, SENSORS] {
        for row in tx.open_table(def)?.iter()? {
            let (k, v) = row?;
            let u: User = decode(k.value(), v.value())?;
            if u.pack != pack && runtimes.contains(&u.runtime.as_str()) {
                users.push(format!("{} uses {}", u.reference, u.runtime));
            }
        }
    }
    if users.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "pack \"{pack}\" defines runtimes other packs still use ({}); remove those packs first",
            users.join(", ")
        )))
    }
}

fn delete_runtime(tx: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    tx.open_table(RUNTIMES)?.remove(name)?;
    tx.open_table(VERSIONS)?.retain(|k, _| k.0 != name)?;
    tx.open_table(CHOICES)?.retain(|k, _| k.0 != name)?;
    Ok(())
}

/// Writes a runtime and its versions from the YAML, keeping live state and operator choices of
/// versions that remain, and enforcing at most one default.
fn write_runtime(tx: &WriteTransaction, rt: &Runtime) -> Result<(), StoreError> {
    let name = rt.name.as_str();
    let mut previous: HashMap<String, RuntimeVersion> = HashMap::new();
    {
        let table = tx.open_table(VERSIONS)?;
        for row in table.iter()? {
            let (k, v) = row?;
            let key = k.value();
            if key.0 == name {
                previous.insert(key.4.to_string(), decode(key.4, v.value())?);
            }
        }
    }
    let mut choices: HashMap<String, Choice> = HashMap::new();
    {
        let table = tx.open_table(CHOICES)?;
        for row in table.iter()? {
            let (k, v) = row?;
            let (r, ver) = k.value();
            if r == name {
                choices.insert(ver.to_string(), decode(ver, v.value())?);
            }
        }
    }
    let chosen_default = choices
        .iter()
        .find(|(v, c)| c.default && rt.version(v).is_some())
        .map(|(v, _)| v.clone());

    let mut versions = rt.versions.clone();
    for v in &mut versions {
        if let Some(old) = previous.get(&v.version) {
            v.available = old.available;
            v.verified_at = old.verified_at;
            v.detected_versions = old.detected_versions.clone();
        }
        if let Some(c) = choices.get(&v.version) {
            if let Some(enabled) = c.enabled {
                v.enabled = enabled;
            }
        }
        if let Some(d) = &chosen_default {
            v.is_default = &v.version == d;
        }
    }
    let defaults: Vec<&str> = versions
        .iter()
        .filter(|v| v.is_default)
        .map(|v| v.version.as_str())
        .collect();
    if defaults.len() > 1 {
        return Err(StoreError::Conflict(format!(
            "runtime \"{name}\" would have {} defaults ({}); at most one version may be the default",
            defaults.len(),
            defaults.join(", ")
        )));
    }

    let mut base = rt.clone();
    base.versions.clear();
    tx.open_table(RUNTIMES)?
        .insert(name, encode(&base).as_slice())?;
    let mut table = tx.open_table(VERSIONS)?;
    table.retain(|k, _| k.0 != name)?;
    for v in &versions {
        let (a, b, c) = version_key(&v.version);
        table.insert((name, a, b, c, v.version.as_str()), encode(v).as_slice())?;
    }
    drop(table);
    // Choices for versions the YAML dropped would otherwise revive if the version came back.
    tx.open_table(CHOICES)?
        .retain(|k, _| k.0 != name || rt.version(k.1).is_some())?;
    Ok(())
}

fn require_version(tx: &WriteTransaction, runtime: &str, version: &str) -> Result<(), StoreError> {
    if tx.open_table(RUNTIMES)?.get(runtime)?.is_none() {
        return Err(StoreError::NotFound(format!(
            "no runtime \"{runtime}\" is registered"
        )));
    }
    let (a, b, c) = version_key(version);
    if tx
        .open_table(VERSIONS)?
        .get((runtime, a, b, c, version))?
        .is_none()
    {
        return Err(StoreError::NotFound(format!(
            "runtime \"{runtime}\" has no version \"{version}\""
        )));
    }
    Ok(())
}

fn update_versions(
    tx: &WriteTransaction,
    runtime: &str,
    mut f: impl FnMut(&mut RuntimeVersion),
) -> Result<(), StoreError> {
    let mut table = tx.open_table(VERSIONS)?;
    let mut updates = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let key = k.value();
        if key.0 == runtime {
            let mut ver: RuntimeVersion = decode(key.4, v.value())?;
            f(&mut ver);
            updates.push(((key.1, key.2, key.3, key.4.to_string()), ver));
        }
    }
    for ((a, b, c, name), ver) in updates {
        table.insert((runtime, a, b, c, name.as_str()), encode(&ver).as_slice())?;
    }
    Ok(())
}

fn drop_archive_if_unused(tx: &WriteTransaction, digest: &str) -> Result<(), StoreError> {
    let mut used = false;
    for row in tx.open_table(PACKS)?.iter()? {
        let (k, v) = row?;
        let meta: PackMeta = decode(k.value(), v.value())?;
        used |= meta.digest == digest;
    }
    if !used {
        tx.open_table(ARCHIVES)?.remove(digest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::load_pack;

    fn demo(versions: &[&str]) -> (tempfile::TempDir, LoadedPack) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("runtimes")).unwrap();
        std::fs::write(p.join("pack.yaml"), "ref: demo\nversion: 1.0.0\n").unwrap();
        let mut rt = String::from("ref: demo.tool\nname: tool\nversions:\n");
        for (i, v) in versions.iter().enumerate() {
            rt.push_str(&format!(
                "  - version: \"{v}\"\n    is_default: {}\n    execution_config: {{ interpreter: {{ binary: tool }} }}\n",
                i == 0
            ));
        }
        std::fs::write(p.join("runtimes/tool.yaml"), rt).unwrap();
        let loaded = load_pack(p, &[]).expect("demo pack loads");
        (dir, loaded)
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("registry.redb")).unwrap();
        (dir, store)
    }

    fn tool(store: &Store) -> Runtime {
        store.snapshot().unwrap().runtimes.remove(0)
    }

    #[test]
    fn rules_are_registered_replaced_and_removed_with_their_pack() {
        let (_d, store) = open();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs");
        let core = load_pack(&shipped.join("core"), &[]).unwrap();
        let t = OffsetDateTime::UNIX_EPOCH;
        store.upsert_pack(&core, "sha256-c", b"c", t).unwrap();
        let mut examples = load_pack(&shipped.join("examples"), &core.runtimes).unwrap();
        store.upsert_pack(&examples, "sha256-e1", b"e", t).unwrap();
        let refs = |s: &Store| -> Vec<String> {
            s.snapshot()
                .unwrap()
                .rules
                .into_iter()
                .map(|r| r.reference)
                .collect()
        };
        assert_eq!(refs(&store), ["examples.stats_on_tick"]);
        examples.rules.clear();
        examples.meta.rules.clear();
        store.upsert_pack(&examples, "sha256-e2", b"e", t).unwrap();
        assert!(refs(&store).is_empty());
        let examples = load_pack(&shipped.join("examples"), &core.runtimes).unwrap();
        store.upsert_pack(&examples, "sha256-e1", b"e", t).unwrap();
        store.remove_pack("examples").unwrap();
        assert!(refs(&store).is_empty());
    }

    #[test]
    fn a_sensor_choice_outlives_re_registration_and_reaches_the_pack_metadata() {
        let (_d, store) = open();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs");
        let core = load_pack(&shipped.join("core"), &[]).unwrap();
        let t = OffsetDateTime::UNIX_EPOCH;
        store.upsert_pack(&core, "sha256-c", b"c", t).unwrap();
        let examples = load_pack(&shipped.join("examples"), &core.runtimes).unwrap();
        store.upsert_pack(&examples, "sha256-e1", b"e", t).unwrap();
        let snap = store.snapshot().unwrap();
        let triggers: Vec<&str> = snap.triggers.iter().map(|t| t.reference.as_str()).collect();
        assert_eq!(triggers, ["examples.tick"]);
        let specs = |s: &Store| -> Vec<bool> {
            let snap = s.snapshot().unwrap();
            let meta = snap
                .packs
                .iter()
                .find(|p| p.reference == "examples")
                .unwrap();
            let mut enabled: Vec<bool> = meta.sensor_specs.iter().map(|x| x.enabled).collect();
            enabled.extend(snap.sensors.iter().map(|x| x.enabled));
            enabled
        };
        assert_eq!(specs(&store), [true, true]);

        let (sensor, meta) = store.set_sensor_enabled("examples.clock", false).unwrap();
        assert!(!sensor.enabled && !meta.sensor_specs[0].enabled);
        assert_eq!(specs(&store), [false, false]);
        // Registered again (a restart re-reads the pack): the operator's choice stays.
        store.upsert_pack(&examples, "sha256-e2", b"e", t).unwrap();
        assert_eq!(specs(&store), [false, false]);
        store.set_sensor_enabled("examples.clock", true).unwrap();
        assert_eq!(specs(&store), [true, true]);
        let err = store.set_sensor_enabled("examples.nope", true).unwrap_err();
        assert_eq!(err.to_string(), "no sensor \"examples.nope\" is registered");

        store.remove_pack("examples").unwrap();
        let snap = store.snapshot().unwrap();
        assert!(snap.triggers.is_empty() && snap.sensors.is_empty());
    }

    #[test]
    fn versions_are_kept_in_numeric_order() {
        let (_d, store) = open();
        let (_p, pack) = demo(&["3.10", "3.9", "3.11"]);
        store
            .upsert_pack(&pack, "sha256-aa", b"tar", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        let names: Vec<String> = tool(&store)
            .versions
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(names, ["3.9", "3.10", "3.11"]);
    }

    #[test]
    fn a_second_default_is_refused_and_nothing_changes() {
        let (_d, store) = open();
        let (_p, pack) = demo(&["1.0", "2.0"]);
        store
            .upsert_pack(&pack, "sha256-aa", b"tar", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        let before = store.snapshot().unwrap();

        let (_p, mut bad) = demo(&["1.0", "2.0", "3.0"]);
        for v in &mut bad.runtimes[0].versions {
            v.is_default = true;
        }
        let err = store
            .upsert_pack(&bad, "sha256-bb", b"tar2", OffsetDateTime::UNIX_EPOCH)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("3 defaults")),
            "{err}"
        );
        assert_eq!(store.snapshot().unwrap(), before);
        assert!(store.archive("sha256-bb").unwrap().is_none());
    }

    #[test]
    fn set_default_leaves_exactly_one_default_and_survives_re_registration() {
        let (_d, store) = open();
        let (_p, pack) = demo(&["1.0", "2.0"]);
        store
            .upsert_pack(&pack, "sha256-aa", b"tar", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        store.set_default("tool", "2.0").unwrap();
        let defaults = |rt: Runtime| -> Vec<String> {
            rt.versions
                .into_iter()
                .filter(|v| v.is_default)
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(defaults(tool(&store)), ["2.0"]);
        store
            .upsert_pack(&pack, "sha256-aa", b"tar", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(defaults(tool(&store)), ["2.0"]);
        assert!(matches!(
            store.set_default("tool", "9.9"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn availability_is_recorded_and_verified_at_outlives_the_runner() {
        let (_d, store) = open();
        let (_p, pack) = demo(&["1.0", "2.0"]);
        store
            .upsert_pack(&pack, "sha256-aa", b"tar", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let key = VersionKey::new("tool", "2.0");
        let live: Availability = [(key.clone(), Report::new(t0, ["2.0.1"]))].into();
        assert!(store.set_availability(&live).unwrap());
        assert!(
            !store.set_availability(&live).unwrap(),
            "no change, no write"
        );
        // A beat a second later does not rewrite verified_at; one after the refresh interval does.
        let soon: Availability = [(
            key.clone(),
            Report::new(t0 + time::Duration::seconds(1), ["2.0.1"]),
        )]
        .into();
        assert!(!store.set_availability(&soon).unwrap());
        let later: Availability = [(
            key.clone(),
            Report::new(t0 + time::Duration::minutes(1), ["2.0.1"]),
        )]
        .into();
        assert!(store.set_availability(&later).unwrap());
        assert_eq!(
            tool(&store).version("2.0").unwrap().detected_versions,
            ["2.0.1"]
        );
        // What the runners' interpreters report is recorded as it changes: a pre-release too.
        let other: Availability = [(
            key.clone(),
            Report::new(t0 + time::Duration::minutes(1), ["2.0.1", "2.0.2-rc1"]),
        )]
        .into();
        assert!(store.set_availability(&other).unwrap());
        assert_eq!(
            tool(&store).version("2.0").unwrap().detected_versions,
            ["2.0.1", "2.0.2-rc1"]
        );

        assert!(store.set_availability(&Availability::new()).unwrap());
        let v2 = tool(&store).version("2.0").cloned().unwrap();
        assert!(!v2.available);
        assert!(v2.detected_versions.is_empty());
        assert_eq!(v2.verified_at, Some(t0 + time::Duration::minutes(1)));
    }
}
