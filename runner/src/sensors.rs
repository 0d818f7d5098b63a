//! Sensors: long-running (or polling) processes whose stdout lines become events.
//!
//! Exactly one instance of each enabled sensor runs across all runners. Each runner, every
//! [`SENSOR_LEASE_RENEW`], decides which sensors it could run ([`wanted`]): the sensor's version
//! is chosen by the one resolver, like an action's, and this runner must serve that version with
//! the pack's current files (and environment) ready. For each of those it does not run, it tries
//! to *create* the sensor's lease in KV `attune-sensors`, which succeeds for one runner only.
//! The holder renews the lease by revision; the bucket expires a lease [`SENSOR_LEASE_TTL`]
//! after its last write, so a dead runner's sensors are taken over within seconds.
//!
//! Two instances never run at once:
//! - a sensor process dies with its runner (parent-death signal, see [`crate::contain`]);
//! - a holder that cannot renew (a partition, a slow server) kills its instance well before
//!   the lease could expire, and one whose renewal finds another revision kills it at once;
//! - a line is published only while its instance is meant to run, so nothing an old instance
//!   printed is published after it was told to stop.
//!
//! A planned stop (disabled, removed, a new pack digest or version, drain) terminates the
//! process, waits for it, and only then deletes the lease, so another runner may start at once.
//!
//! Every line is hostile input: it is read with a cap, parsed and checked against the trigger's
//! payload schema ([`attune_nats::events::parse_sensor_line`]); a refused line is counted, logged
//! with the reason and never published. The counters travel in the lease, for `attune sensor
//! list`. A long-running sensor that exits is restarted with a backoff (1 s, doubling to 60 s;
//! back to 1 s after a minute of running); a polling sensor runs once per `poll_interval` and is
//! killed if a run lasts longer than that.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::Context;
use attune_nats::events::{parse_sensor_line, publish_event, PayloadSchemas, MAX_EVENT_BYTES};
use attune_nats::jetstream::{SENSOR_LEASE_RENEW, SENSOR_LEASE_TTL};
use attune_nats::resolve::{select_version, Mode};
use attune_nats::shutdown::Shutdown;
use attune_nats::wire::SensorLease;
use attune_nats::{Constraint, Sensor, TriggerType, VersionKey};
use nix::sys::signal::Signal;
use time::OffsetDateTime;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::catalog::State;
use crate::contain::{self, Tree};
use crate::procenv::{command_args, process_env, set_env};
use crate::service::Dispatcher;
use crate::template::Vars;

/// The longest stderr line a sensor may log; the rest of the line is dropped.
const MAX_LOG_LINE: usize = 4096;
/// First restart delay of a long-running sensor that exited.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A sensor that ran this long before exiting restarts after [`BACKOFF_FIRST`] again.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// A holder that has not renewed for this long stops its instance: the lease may expire soon.
const STALE_AFTER: Duration = SENSOR_LEASE_TTL
    .saturating_sub(SENSOR_LEASE_RENEW)
    .saturating_sub(SENSOR_LEASE_RENEW);
/// Waits between attempts to publish an event the stream did not take.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

/// Where and how one sensor would run on this runner now. Any change restarts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The definition.
    pub sensor: Sensor,
    /// Its trigger types, with their schemas.
    pub triggers: Vec<TriggerType>,
    /// The version the resolver chose, served here.
    pub key: VersionKey,
    /// The pack digest whose files it runs.
    pub digest: String,
    /// The pinned interpreter (or the environment's).
    pub program: PathBuf,
}

/// The sensors this runner could run now, by ref: enabled, their chosen version served and
/// live here, their pack's current files (and environment, if the runtime wants one) ready.
pub fn wanted(s: &State) -> HashMap<String, Placement> {
    let mut out = HashMap::new();
    for meta in s.pack_meta.values() {
        let Some(dir) = s
            .pack_dirs
            .get(&meta.reference)
            .filter(|d| d.digest == meta.digest)
        else {
            continue;
        };
        for sensor in meta.sensor_specs.iter().filter(|x| x.enabled) {
            let Some(runtime) = s.runtimes.get(&sensor.runtime) else {
                continue;
            };
            let Ok(constraint) = Constraint::parse_optional(sensor.runtime_version.as_deref())
            else {
                continue;
            };
            let Ok(chosen) = select_version(runtime, &constraint, Mode::Sync) else {
                continue;
            };
            let key = VersionKey::new(&runtime.name, &chosen.chosen);
            let Some(served) = s
                .served
                .get(&key)
                .filter(|sv| sv.live.load(std::sync::atomic::Ordering::Acquire))
            else {
                continue;
            };
            let program = if crate::env::wants_env(&served.config) {
                match s
                    .envs
                    .get(&meta.reference)
                    .and_then(|m| m.get(&key))
                    .filter(|e| e.digest == dir.digest)
                {
                    Some(env) => env.interpreter.clone(),
                    None => continue,
                }
            } else {
                served.verified.binary.clone()
            };
            let triggers = meta
                .trigger_types
                .iter()
                .filter(|t| sensor.triggers.contains(&t.name))
                .cloned()
                .collect();
            out.insert(
                sensor.reference.clone(),
                Placement {
                    sensor: sensor.clone(),
                    triggers,
                    key,
                    digest: dir.digest.clone(),
                    program,
                },
            );
        }
    }
    out
}

/// What an instance has done since its runner took the lease.
#[derive(Debug, Default, Clone)]
struct Stats {
    events: u64,
    invalid: u64,
    restarts: u64,
    pid: Option<u32>,
    last_problem: Option<String>,
}

/// How an instance is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep running.
    No,
    /// Planned: terminate, give it the kill grace, then kill.
    Gently,
    /// The lease is lost or may be: kill now, publish nothing more.
    Now,
}

/// One sensor this runner holds the lease of.
struct Held {
    placement: Placement,
    revision: u64,
    /// When the last successful write of the lease was sent.
    renewed: Instant,
    since: OffsetDateTime,
    stats: Arc<Mutex<Stats>>,
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
    /// Told to stop (planned); the lease goes once the task has ended.
    stopping: bool,
}

/// The sensors side of a runner: takes, renews and releases leases, and runs the instances.
pub struct Sensors {
    dispatcher: Arc<Dispatcher>,
    js: Context,
    leases: kv::Store,
    held: HashMap<String, Held>,
}

impl Sensors {
    /// The sensors side of the runner of `dispatcher`, with leases in `leases`.
    pub fn new(dispatcher: Arc<Dispatcher>, js: Context, leases: kv::Store) -> Self {
        Sensors {
            dispatcher,
            js,
            leases,
            held: HashMap::new(),
        }
    }

    /// Runs until `shutdown`, then stops every instance and releases its lease.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(SENSOR_LEASE_RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tick.tick() => {}
            }
            self.round().await;
        }
        let refs: Vec<String> = self.held.keys().cloned().collect();
        for r in refs {
            self.release(&r, Stop::Gently).await;
        }
        debug!("sensors stopped");
    }

    /// One round: stop what is no longer wanted here, renew what is held, take what is free.
    async fn round(&mut self) {
        let want = self.dispatcher.catalog.read(wanted);
        // A planned stop does not hold up this loop (the other leases must be renewed while a
        // process takes its grace to exit): the instance is told to stop, its lease is kept
        // and renewed until the process is gone, then deleted.
        for (r, h) in self.held.iter_mut() {
            if !h.stopping && want.get(r) != Some(&h.placement) {
                info!(sensor = %r, "no longer to run here as it is (disabled, removed, updated or moved): stopping");
                let _ = h.stop.send(Stop::Gently);
                h.stopping = true;
            }
        }
        let stopped: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.stopping && h.task.is_finished())
            .map(|(r, _)| r.clone())
            .collect();
        for r in stopped {
            self.release(&r, Stop::Gently).await;
        }
        let refs: Vec<String> = self.held.keys().cloned().collect();
        for r in refs {
            self.renew(&r).await;
        }
        let mut free: Vec<(&String, &Placement)> = want
            .iter()
            .filter(|(r, _)| !self.held.contains_key(*r))
            .collect();
        free.sort_by_key(|(r, _)| r.as_str());
        let free: Vec<(String, Placement)> = free
            .into_iter()
            .map(|(r, p)| (r.clone(), p.clone()))
            .collect();
        for (r, p) in free {
            self.take(r, p).await;
        }
        let running = self.held.values().filter(|h| !h.stopping).count() as u64;
        self.dispatcher
            .metrics
            .sensors_running
            .store(running, std::sync::atomic::Ordering::Relaxed);
    }

    /// The lease document of a held sensor now.
    fn lease(&self, placement: &Placement, since: OffsetDateTime, stats: &Stats) -> SensorLease {
        SensorLease {
            sensor: placement.sensor.reference.clone(),
            runner: self.dispatcher.config.name.clone(),
            runtime: placement.key.runtime.clone(),
            version: placement.key.version.clone(),
            digest: placement.digest.clone(),
            pid: stats.pid,
            since,
            events: stats.events,
            invalid: stats.invalid,
            restarts: stats.restarts,
            last_problem: stats.last_problem.clone(),
        }
    }

    /// Tries to create the lease of `r`; starts the instance when this runner got it.
    async fn take(&mut self, r: String, placement: Placement) {
        let since = OffsetDateTime::now_utc();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let doc = self.lease(&placement, since, &Stats::default());
        let sent = Instant::now();
        match self.leases.create(&r, encode(&doc)).await {
            Ok(revision) => {
                info!(sensor = %r, version = %placement.key, "took the sensor's lease: starting it");
                let (stop, stop_rx) = watch::channel(Stop::No);
                let task = tokio::spawn(instance(
                    self.dispatcher.clone(),
                    self.js.clone(),
                    placement.clone(),
                    stats.clone(),
                    stop_rx,
                ));
                self.held.insert(
                    r,
                    Held {
                        placement,
                        revision,
                        renewed: sent,
                        since,
                        stats,
                        stop,
                        task,
                        stopping: false,
                    },
                );
            }
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => debug!(sensor = %r, error = %e, "could not take the sensor's lease"),
        }
    }

    /// Renews the lease of `r`, with the instance's counters. A lease found taken is lost: the
    /// instance is killed at once. One not renewed for [`STALE_AFTER`] may expire soon: same.
    async fn renew(&mut self, r: &str) {
        let Some(held) = self.held.get(r) else { return };
        let stats = held.stats.lock().expect("never poisoned").clone();
        let doc = self.lease(&held.placement, held.since, &stats);
        let sent = Instant::now();
        match self.leases.update(r, encode(&doc), held.revision).await {
            Ok(revision) => {
                let held = self.held.get_mut(r).expect("present");
                held.revision = revision;
                held.renewed = sent;
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                warn!(sensor = %r, "the sensor's lease was taken or removed: stopping it now");
                self.drop_instance(r, Stop::Now).await;
            }
            Err(e) => {
                if held.renewed.elapsed() >= STALE_AFTER {
                    warn!(sensor = %r, error = %e, "could not renew the sensor's lease in time: stopping it before it expires");
                    self.drop_instance(r, Stop::Now).await;
                } else {
                    debug!(sensor = %r, error = %e, "could not renew the sensor's lease; retrying");
                }
            }
        }
    }

    /// Stops the instance of `r` and forgets it, without touching the lease.
    async fn drop_instance(&mut self, r: &str, how: Stop) -> Option<Held> {
        let mut held = self.held.remove(r)?;
        let _ = held.stop.send(how);
        // The instance kills its process and returns; a grace longer than that is a bug, but
        // must not wedge the loop that renews the other leases.
        let wait = self.dispatcher.config.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(wait, &mut held.task).await.is_err() {
            warn!(sensor = %r, "the sensor's instance did not stop in time; aborting it");
            held.task.abort();
        }
        Some(held)
    }

    /// Stops the instance of `r`, then deletes its lease (by revision) so another runner can
    /// start it at once.
    async fn release(&mut self, r: &str, how: Stop) {
        let Some(held) = self.drop_instance(r, how).await else {
            return;
        };
        if let Err(e) = self
            .leases
            .delete_expect_revision(r, Some(held.revision))
            .await
        {
            debug!(sensor = %r, error = %e, "could not release the sensor's lease; it expires");
        }
    }
}

fn encode(lease: &SensorLease) -> bytes::Bytes {
    serde_json::to_vec(lease).expect("leases serialise").into()
}

/// Runs one sensor until told to stop: restarts a long-running one that exits (with backoff),
/// runs a polling one once per interval.
async fn instance(
    dispatcher: Arc<Dispatcher>,
    js: Context,
    placement: Placement,
    stats: Arc<Mutex<Stats>>,
    mut stop: watch::Receiver<Stop>,
) {
    let sensor = &placement.sensor;
    let schemas = PayloadSchemas::new(&placement.triggers);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let exit = run_once(&dispatcher, &js, &placement, &schemas, &stats, &mut stop).await;
        stats.lock().expect("never poisoned").pid = None;
        if *stop.borrow() != Stop::No {
            return;
        }
        let pause = match sensor.poll_interval {
            Some(secs) => Duration::from_secs(secs).saturating_sub(started.elapsed()),
            None => {
                let why = format!("exited: {exit}");
                warn!(sensor = %sensor.reference, %why, restart_in = ?backoff, "sensor exited; restarting");
                {
                    let mut st = stats.lock().expect("never poisoned");
                    st.restarts += 1;
                    st.last_problem = Some(why);
                }
                if started.elapsed() >= BACKOFF_RESET {
                    backoff = BACKOFF_FIRST;
                }
                let pause = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Starts the sensor's process once and reads its lines until it exits, is told to stop, or
/// (polling) outlives its interval. Returns how it ended, for the log.
async fn run_once(
    dispatcher: &Dispatcher,
    js: &Context,
    placement: &Placement,
    schemas: &PayloadSchemas,
    stats: &Mutex<Stats>,
    stop: &mut watch::Receiver<Stop>,
) -> String {
    let sensor = &placement.sensor;
    let (pack_dir, _) = dispatcher
        .catalog
        .pack_and_env(&sensor.pack, &placement.key);
    let Some(pack_dir) = pack_dir.filter(|d| d.digest == placement.digest) else {
        return "its pack files are gone".to_string();
    };
    let script = match pack_dir.sensor_script(&sensor.entry_point) {
        Ok(s) => s,
        Err(why) => return why,
    };
    let served = dispatcher
        .catalog
        .read(|s| s.served.get(&placement.key).cloned());
    let Some(served) = served else {
        return format!("{} is no longer served", placement.key);
    };
    let config = &dispatcher.config;
    let env_dir = crate::env::env_dir(&config.envs_dir, &sensor.pack, &placement.key);
    let vars = Vars::new(&pack_dir.path, &env_dir, &placement.program, None);
    let args = command_args(&served.config, &vars, script);
    let id = attune_nats::reply::new_id();
    let mut env = process_env(
        &dispatcher.base_env,
        &served.config,
        &vars,
        &id,
        &sensor.reference,
        &sensor.pack,
        &placement.key,
    );
    set_env(&mut env, "ATTUNE_SENSOR", sensor.reference.clone());
    let tag = contain::new_tag();
    let mut cmd = Command::new(&placement.program);
    cmd.args(&args)
        .current_dir(&pack_dir.path)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(contain::TAG_VAR, &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match contain::spawn(cmd).await {
        Ok(c) => c,
        Err(e) => return format!("cannot start {}: {e}", placement.program.display()),
    };
    let pid = child.id().expect("a just-spawned child has a pid");
    let mut tree = Tree::new(pid, tag, Some(&dispatcher.params_dir));
    stats.lock().expect("never poisoned").pid = Some(pid);
    info!(sensor = %sensor.reference, pid, version = %placement.key, "sensor started");

    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let reference = sensor.reference.clone();
    let log_task = tokio::spawn(async move { log_lines(stderr, &reference).await });
    let deadline = sensor
        .poll_interval
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s.max(1)));
    let overran = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let read = read_events(
        js,
        dispatcher,
        placement,
        schemas,
        stats,
        stop.clone(),
        stdout,
    );
    let ended = tokio::select! {
        () = read => None,
        how = stop.wait_for(|s| *s != Stop::No) => Some(how.map_or(Stop::Now, |h| *h)),
        () = overran => {
            let why = format!("a poll took longer than its poll_interval of {}s: killed", sensor.poll_interval.unwrap_or(0));
            warn!(sensor = %sensor.reference, "{why}");
            stats.lock().expect("never poisoned").last_problem = Some(why);
            Some(Stop::Now)
        }
    };
    match ended {
        Some(Stop::Gently) => {
            tree.signal(Signal::SIGTERM);
            if tokio::time::timeout(config.kill_grace, child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
        Some(_) => {
            let _ = child.start_kill();
        }
        // Its stdout closed: it is done with us; one that lingers gets the grace, then is killed.
        None => {
            if tokio::time::timeout(config.kill_grace, child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
    let status = child.wait().await;
    tree.kill_all();
    log_task.abort();
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("waiting for it failed: {e}"),
    }
}

/// Reads `stdout` line by line until it ends, publishing each valid event in order (retrying a
/// publish the stream refused) and counting the refused lines. Stops publishing as soon as the
/// instance is told to stop.
async fn read_events(
    js: &Context,
    dispatcher: &Dispatcher,
    placement: &Placement,
    schemas: &PayloadSchemas,
    stats: &Mutex<Stats>,
    stop: watch::Receiver<Stop>,
    mut stdout: impl AsyncBufRead + Unpin,
) {
    let sensor = &placement.sensor;
    let ns = &dispatcher.config.namespace;
    let mut buf = Vec::new();
    loop {
        let line = match read_capped_line(&mut stdout, &mut buf, MAX_EVENT_BYTES).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) => {
                debug!(sensor = %sensor.reference, error = %e, "reading the sensor's output failed");
                return;
            }
        };
        let parsed = match line {
            Line::Complete(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Complete(bytes) => parse_sensor_line(sensor, schemas, bytes),
            Line::TooLong(size) => Err(attune_nats::events::EventError::TooLarge {
                size,
                max: MAX_EVENT_BYTES,
            }),
        };
        let event = match parsed {
            Ok(e) => e,
            Err(e) => {
                let why = e.to_string();
                warn!(sensor = %sensor.reference, reason = %why, "refused a sensor line");
                let mut st = stats.lock().expect("never poisoned");
                st.invalid += 1;
                st.last_problem = Some(why);
                dispatcher
                    .metrics
                    .sensor_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
        };
        loop {
            if *stop.borrow() != Stop::No {
                return;
            }
            match publish_event(js, ns, &event).await {
                Ok(_) => {
                    stats.lock().expect("never poisoned").events += 1;
                    dispatcher
                        .metrics
                        .sensor_events
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    warn!(sensor = %sensor.reference, event = %event.id, error = %e, "could not publish an event; retrying");
                    tokio::time::sleep(PUBLISH_RETRY).await;
                }
            }
        }
    }
}

/// One line of a sensor's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line, without its newline.
    Complete(&'a [u8]),
    /// A line longer than the cap, of this many bytes; its content was dropped as it came.
    TooLong(usize),
}

/// Reads the next line of `r` into `buf`, keeping at most `cap` bytes of it: a longer line is
/// drained to its newline and reported as [`Line::TooLong`], so no line makes memory grow
/// past the cap. `None` at the end of the stream (a last line without newline is a line).
pub async fn read_capped_line<'b>(
    r: &mut (impl AsyncBufRead + Unpin),
    buf: &'b mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<Line<'b>>> {
    buf.clear();
    let mut size = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (any, size > cap) {
                (false, _) => None,
                (true, true) => Some(Line::TooLong(size)),
                (true, false) => Some(Line::Complete(buf)),
            });
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        size += part.len();
        if size <= cap {
            buf.extend_from_slice(part);
        } else {
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(if size > cap {
                Line::TooLong(size)
            } else {
                Line::Complete(buf)
            }));
        }
    }
}

/// Logs a sensor's stderr, a line at a time, each cut at [`MAX_LOG_LINE`].
async fn log_lines(mut r: impl AsyncBufRead + Unpin, sensor: &str) {
    let mut buf = Vec::new();
    while let Ok(Some(line)) = read_capped_line(&mut r, &mut buf, MAX_LOG_LINE).await {
        match line {
            Line::Complete(bytes) => {
                info!(sensor, stderr = %String::from_utf8_lossy(bytes), "sensor stderr")
            }
            Line::TooLong(size) => {
                info!(
                    sensor,
                    bytes = size,
                    "sensor stderr: a line too long to log"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], cap: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = read_capped_line(&mut r, &mut buf, cap).await.unwrap() {
            out.push(match line {
                Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong(n) => format!("<{n} bytes>"),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_are_cut_at_newlines_and_long_ones_are_dropped_whole() {
        assert_eq!(lines(b"ab\ncd\n", 8).await, ["ab", "cd"]);
        assert_eq!(lines(b"ab\n\nlast", 8).await, ["ab", "", "last"]);
        assert_eq!(lines(b"0123456789abc\nok\n", 8).await, ["<13 bytes>", "ok"]);
        assert_eq!(lines(b"0123456789abc", 8).await, ["<13 bytes>"]);
        assert_eq!(lines(b"12345678\n", 8).await, ["12345678"]);
        assert!(lines(b"", 8).await.is_empty());
    }
}
