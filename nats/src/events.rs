//! Events: what sensors (or any client allowed to) publish on `attune.events.<pack>.<trigger>`,
//! kept in the stream `ATTUNE_EVENTS` for [`EVENTS_MAX_AGE`], and evaluated against rules by the
//! registries through one shared durable consumer.
//!
//! An event is hostile input like any message: [`parse_event`] is the one check every reader
//! applies (size, JSON shape, id, trigger agreeing with the subject), so a bad event is refused
//! with the reason wherever it is read, and never fires a rule.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::jetstream::{StoreError, StoreOptions};
use crate::model::{Sensor, TriggerType};
use crate::name::{check_id, NameError};
use crate::subject::{Namespace, HEADER_MSG_ID};

/// How long the stream keeps an event.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest event, as published (JSON).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// How long the stream remembers an event id: an event published twice within it is kept once.
pub const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// How long a registry may hold an event before it is given to another registry.
pub const RULES_ACK_WAIT: Duration = Duration::from_secs(30);

/// One event of one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (`[A-Za-z0-9_-]`); also the stream's `Nats-Msg-Id`, so a re-sent event is kept
    /// once.
    pub id: String,
    /// The trigger, `<pack>.<trigger>`; must agree with the subject.
    pub trigger: String,
    /// What happened: any JSON value, usually an object; rules read it as `trigger.<path>`.
    #[serde(default)]
    pub payload: Value,
    /// The sensor that emitted it; absent for events a client published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    /// When it happened (RFC 3339 on the wire).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

impl Event {
    /// A new event of `trigger` (`<pack>.<trigger>`) now, with a fresh id.
    pub fn new(trigger: &str, payload: Value, sensor: Option<String>) -> Event {
        Event {
            id: crate::reply::new_id(),
            trigger: trigger.to_string(),
            payload,
            sensor,
            occurred_at: OffsetDateTime::now_utc(),
        }
    }

    /// The subject it is published on.
    pub fn subject(&self, ns: &Namespace) -> String {
        let (pack, trigger) = self.trigger.split_once('.').unwrap_or((&self.trigger, ""));
        ns.events(pack, trigger)
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event is {size} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not an event object.
    #[error("event is not valid: {0}")]
    Malformed(String),
    /// A bad id.
    #[error("event id: {0}")]
    Id(NameError),
    /// A trigger that is not `<pack>.<trigger>` of valid names.
    #[error("event trigger \"{trigger}\": {error}")]
    Trigger {
        /// As given.
        trigger: String,
        /// What is wrong.
        error: NameError,
    },
    /// No trigger type of that ref is registered (or the sensor does not declare it).
    #[error("trigger \"{trigger}\" {why}")]
    UnknownTrigger {
        /// The trigger ref.
        trigger: String,
        /// Why it is not accepted here.
        why: String,
    },
    /// The payload does not satisfy the trigger type's `payload_schema`.
    #[error("payload of trigger \"{trigger}\" does not match its payload_schema: {problems}")]
    Payload {
        /// The trigger ref.
        trigger: String,
        /// Each violation, `path: message`, joined with `; `.
        problems: String,
    },
    /// The subject is not an events subject, or names another trigger than the body.
    #[error("event of trigger \"{trigger}\" published on {subject}; it belongs on {expected}")]
    Subject {
        /// The subject it came on.
        subject: String,
        /// The body's trigger.
        trigger: String,
        /// Where it belongs.
        expected: String,
    },
}

/// Checks a trigger ref: `<pack>.<trigger>`, each a valid name.
pub fn check_trigger(trigger: &str) -> Result<(), NameError> {
    crate::name::check_action_ref(trigger)
}

/// Reads and checks an event that arrived on `subject`.
pub fn parse_event(ns: &Namespace, subject: &str, body: &[u8]) -> Result<Event, EventError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge {
            size: body.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let event: Event =
        serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
    check_id(&event.id).map_err(EventError::Id)?;
    check_trigger(&event.trigger).map_err(|error| EventError::Trigger {
        trigger: event.trigger.clone(),
        error,
    })?;
    if let Some(sensor) = &event.sensor {
        crate::name::check_action_ref(sensor)
            .map_err(|e| EventError::Malformed(format!("sensor \"{sensor}\": {e}")))?;
    }
    let expected = event.subject(ns);
    if subject != expected {
        return Err(EventError::Subject {
            subject: subject.to_string(),
            trigger: event.trigger,
            expected,
        });
    }
    Ok(event)
}

/// The payload schemas of a set of trigger types, compiled once: what the registry checks every
/// event against before evaluating rules, and a runner every line of a sensor before publishing.
pub struct PayloadSchemas {
    /// Trigger ref → its compiled schema (`None`: the empty schema, any payload).
    by_ref: HashMap<String, Option<jsonschema::Validator>>,
}

impl std::fmt::Debug for PayloadSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSchemas")
            .field("triggers", &self.by_ref.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PayloadSchemas {
    /// Compiles the schemas of `types`. A schema that does not compile (the pack loader refuses
    /// those, so only a hand-written KV entry has one) accepts no payload of its trigger.
    pub fn new<'a>(types: impl IntoIterator<Item = &'a TriggerType>) -> Self {
        let by_ref = types
            .into_iter()
            .map(|t| {
                let schema = &t.payload_schema;
                let empty = schema.as_object().is_some_and(|o| o.is_empty());
                let compiled = if empty {
                    None
                } else {
                    // `false` rejects everything: the honest stand-in for a schema that is broken.
                    Some(
                        jsonschema::validator_for(schema)
                            .or_else(|_| jsonschema::validator_for(&Value::Bool(false)))
                            .expect("the `false` schema compiles"),
                    )
                };
                (t.reference.clone(), compiled)
            })
            .collect();
        PayloadSchemas { by_ref }
    }

    /// Whether `trigger` is one of these types.
    pub fn knows(&self, trigger: &str) -> bool {
        self.by_ref.contains_key(trigger)
    }

    /// Checks `payload` against the schema of `trigger`; an unknown trigger is refused.
    pub fn check(&self, trigger: &str, payload: &Value) -> Result<(), EventError> {
        let Some(schema) = self.by_ref.get(trigger) else {
            return Err(EventError::UnknownTrigger {
                trigger: trigger.to_string(),
                why: "is not a registered trigger type".to_string(),
            });
        };
        let Some(validator) = schema else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(payload)
            .take(5)
            .map(|e| {
                let path = e.instance_path().as_str();
                let at = if path.is_empty() { "payload" } else { path };
                // A message quotes the offending value, which may be most of 256 KiB.
                clip(format!("{at}: {e}"), MAX_PROBLEM_CHARS)
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EventError::Payload {
                trigger: trigger.to_string(),
                problems: problems.join("; "),
            })
        }
    }
}

/// The longest trigger name from a sensor line quoted in a message.
const MAX_NAME_CHARS: usize = 128;
/// The longest single schema violation in a message (logs, leases, CLI errors).
const MAX_PROBLEM_CHARS: usize = 300;

/// `text` cut to at most `max` characters, with `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if let Some((i, _)) = text.char_indices().nth(max) {
        text.truncate(i);
        text.push('…');
    }
    text
}

/// Reads one stdout line of `sensor` as an event: `{"trigger": <name>, "payload": <value>}`,
/// where a bare name is a trigger of the sensor's own pack, or (for a sensor with one trigger)
/// the payload alone. The trigger must be one the sensor declares, and the payload must satisfy
/// its schema (`schemas` holds the sensor's pack's trigger types). The event gets a fresh id
/// and the current time.
pub fn parse_sensor_line(
    sensor: &Sensor,
    schemas: &PayloadSchemas,
    line: &[u8],
) -> Result<Event, EventError> {
    if line.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge {
            size: line.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| EventError::Malformed(format!("a sensor line must be one JSON value: {e}")))?;
    let (name, payload) = match value {
        Value::Object(mut o)
            if o.len() <= 2
                && o.get("trigger").is_some_and(Value::is_string)
                && (o.len() == 1 || o.contains_key("payload")) =>
        {
            let Some(Value::String(name)) = o.remove("trigger") else {
                unreachable!("checked to be a string")
            };
            (name, o.remove("payload").unwrap_or(Value::Null))
        }
        payload => match sensor.triggers.as_slice() {
            [only] => (only.clone(), payload),
            _ => {
                return Err(EventError::Malformed(format!(
                    "sensor {} declares {} triggers, so each line must be {{\"trigger\": <name>, \
                     \"payload\": …}}",
                    sensor.reference,
                    sensor.triggers.len()
                )))
            }
        },
    };
    let bare = match name.split_once('.') {
        Some((pack, bare)) if pack == sensor.pack => bare,
        Some(_) => {
            return Err(EventError::UnknownTrigger {
                trigger: clip(name, MAX_NAME_CHARS),
                why: format!(
                    "belongs to another pack; sensor {} emits only triggers of pack {}",
                    sensor.reference, sensor.pack
                ),
            })
        }
        None => name.as_str(),
    };
    if !sensor.triggers.iter().any(|t| t == bare) {
        return Err(EventError::UnknownTrigger {
            trigger: clip(name.clone(), MAX_NAME_CHARS),
            why: format!(
                "is not declared by sensor {} (declared: {})",
                sensor.reference,
                sensor.triggers.join(", ")
            ),
        });
    }
    let trigger = format!("{}.{bare}", sensor.pack);
    schemas.check(&trigger, &payload)?;
    Ok(Event::new(
        &trigger,
        payload,
        Some(sensor.reference.clone()),
    ))
}

/// The events stream's settings.
fn events_stream_config(ns: &Namespace, opts: &StoreOptions) -> stream::Config {
    stream::Config {
        name: ns.stream_events(),
        description: Some("Attune events".to_string()),
        subjects: vec![ns.events_all()],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: EVENTS_DUPLICATE_WINDOW,
        num_replicas: opts.replicas.max(1),
        max_age: EVENTS_MAX_AGE,
        max_message_size: MAX_EVENT_BYTES as i32,
        ..Default::default()
    }
}

/// The registries' shared consumer of the events stream.
fn rules_consumer_config(ns: &Namespace) -> consumer::pull::Config {
    let name = ns.rules_consumer();
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some("Attune registries evaluating rules".to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: RULES_ACK_WAIT,
        // An event no registry could evaluate (its jobs stream refused the job) is tried again;
        // after this many deliveries it is left, logged by the last registry that tried.
        max_deliver: 10,
        deliver_policy: consumer::DeliverPolicy::New,
        ..Default::default()
    }
}

/// Creates the events stream and the rules consumer, or updates the stream's replicas.
/// Idempotent. For the registry's set-up step only.
pub async fn provision_events(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<consumer::PullConsumer, StoreError> {
    let stream = crate::jetstream::provision_stream(js, events_stream_config(ns, opts)).await?;
    let consumer = ns.rules_consumer();
    stream
        .get_or_create_consumer(&consumer, rules_consumer_config(ns))
        .await
        .map_err(|e| StoreError::new("consumer", &consumer, Box::new(e)))
}

/// Publishes `event` on its subject with `Nats-Msg-Id` = its id and waits for the stream to
/// store it.
pub async fn publish_event(
    js: &jetstream::Context,
    ns: &Namespace,
    event: &Event,
) -> Result<jetstream::publish::PublishAck, async_nats::Error> {
    let body = serde_json::to_vec(event).expect("events serialise");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_MSG_ID, event.id.as_str());
    Ok(js
        .publish_with_headers(event.subject(ns), headers, body.into())
        .await?
        .await?)
}

pub use crate::jetstream::Window;

/// Reads events from the stream, oldest first, through an ordered consumer of its own (nothing
/// is acknowledged; the rules consumer is not disturbed). [`Window::Last`] reads every event of
/// the filter kept in the stream to find the newest. `trigger` (`<pack>.<trigger>`) keeps
/// only that trigger's. Each item is the stream sequence and the event, or why it was refused.
pub async fn read_events(
    js: &jetstream::Context,
    ns: &Namespace,
    trigger: Option<&str>,
    window: Window,
) -> Result<
    futures::stream::BoxStream<
        'static,
        Result<(u64, Result<Event, EventError>), async_nats::Error>,
    >,
    async_nats::Error,
> {
    let filter_subject = match trigger {
        Some(t) => {
            check_trigger(t)?;
            let (pack, name) = t.split_once('.').unwrap_or((t, ""));
            ns.events(pack, name)
        }
        None => ns.events_all(),
    };
    let stream = ns.stream_events();
    let ns = ns.clone();
    let decode = move |m: jetstream::Message| {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
        Some((seq, parse_event(&ns, &m.subject, &m.payload)))
    };
    crate::jetstream::read_stream(js, &stream, filter_subject, window, decode).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sensor(triggers: &[&str]) -> Sensor {
        serde_json::from_value(json!({
            "ref": "mon.watch", "pack": "mon", "name": "watch", "runner_type": "python",
            "runtime": "python", "entry_point": "watch.py",
            "triggers": triggers,
        }))
        .unwrap()
    }

    fn types() -> Vec<TriggerType> {
        vec![
            serde_json::from_value(json!({
                "ref": "mon.alert", "pack": "mon", "name": "alert",
                "payload_schema": {"type": "object", "required": ["host"],
                                   "properties": {"host": {"type": "string"}, "severity": {"type": "integer"}}}
            }))
            .unwrap(),
            serde_json::from_value(json!({"ref": "mon.ping", "pack": "mon", "name": "ping"})).unwrap(),
        ]
    }

    fn line(s: &Sensor, text: &str) -> Result<Event, EventError> {
        parse_sensor_line(s, &PayloadSchemas::new(&types()), text.as_bytes())
    }

    #[test]
    fn sensor_lines_name_their_trigger_or_are_the_payload_of_the_only_one() {
        let two = sensor(&["alert", "ping"]);
        let e = line(&two, r#"{"trigger": "alert", "payload": {"host": "db1"}}"#).unwrap();
        assert_eq!(
            (e.trigger.as_str(), e.sensor.as_deref()),
            ("mon.alert", Some("mon.watch"))
        );
        assert_eq!(e.payload, json!({"host": "db1"}));
        // The pack-qualified name is the same trigger; a trigger alone has a null payload.
        let e = line(&two, r#"{"trigger": "mon.ping"}"#).unwrap();
        assert_eq!((e.trigger.as_str(), &e.payload), ("mon.ping", &Value::Null));
        check_id(&e.id).unwrap();
        // With one trigger, a line is the payload itself.
        let one = sensor(&["alert"]);
        let e = line(&one, r#"{"host": "web", "severity": 2}"#).unwrap();
        assert_eq!(e.trigger, "mon.alert");
        assert_eq!(e.payload["severity"], 2);
    }

    #[test]
    fn bad_sensor_lines_are_refused_with_the_reason() {
        let two = sensor(&["alert", "ping"]);
        let refused = |s: &Sensor, text: &str| line(s, text).unwrap_err().to_string();
        assert!(refused(&two, "not json").contains("must be one JSON value"));
        assert!(refused(&two, r#"{"host": "db1"}"#).contains("declares 2 triggers"));
        assert!(refused(&two, r#"{"trigger": "nope", "payload": {}}"#)
            .contains("is not declared by sensor mon.watch (declared: alert, ping)"));
        assert!(
            refused(&two, r#"{"trigger": "other.alert", "payload": {}}"#)
                .contains("belongs to another pack")
        );
        let bad = refused(
            &two,
            r#"{"trigger": "alert", "payload": {"severity": "high"}}"#,
        );
        assert!(bad.contains("does not match its payload_schema"), "{bad}");
        assert!(bad.contains("\"host\" is a required property"), "{bad}");
        assert!(bad.contains("/severity"), "{bad}");
        // A declared name with no trigger type registered is refused, not published unchecked.
        let stray = sensor(&["ghost"]);
        assert!(refused(&stray, "{}").contains("is not a registered trigger type"));
        let huge = format!("{{\"host\": \"{}\"}}", "x".repeat(MAX_EVENT_BYTES));
        assert!(refused(&sensor(&["alert"]), &huge).contains("at most"));
        // An envelope with an extra key is a payload (of the only trigger), not an envelope.
        let e = line(
            &sensor(&["ping"]),
            r#"{"trigger": "x", "payload": 1, "more": 2}"#,
        )
        .unwrap();
        assert_eq!(e.payload["more"], 2);
    }

    #[test]
    fn a_schema_violation_quoting_a_huge_value_is_cut() {
        let huge = "é".repeat(100_000);
        let e = line(
            &sensor(&["alert"]),
            &format!(r#"{{"host": "db", "severity": "{huge}"}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.chars().count() < 500, "{} chars", e.chars().count());
        assert!(e.contains("/severity") && e.ends_with('…'), "{e}");
        let long = "t".repeat(100_000);
        let e = line(&sensor(&["alert"]), &format!(r#"{{"trigger": "{long}"}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
    }

    #[test]
    fn a_schema_that_does_not_compile_accepts_nothing() {
        let broken: TriggerType = serde_json::from_value(json!({
            "ref": "mon.b", "pack": "mon", "name": "b", "payload_schema": {"type": 12}
        }))
        .unwrap();
        let schemas = PayloadSchemas::new([&broken]);
        assert!(schemas.knows("mon.b"));
        assert!(schemas.check("mon.b", &json!({})).is_err());
        assert!(schemas.check("mon.c", &json!({})).is_err());
    }

    #[test]
    fn an_event_round_trips_and_is_checked_against_its_subject() {
        let ns = Namespace::default();
        let e = Event::new(
            "examples.tick",
            json!({"at": 1}),
            Some("examples.clock".into()),
        );
        let body = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            parse_event(&ns, "attune.events.examples.tick", &body),
            Ok(e.clone())
        );
        let err = parse_event(&ns, "attune.events.examples.tock", &body).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs on attune.events.examples.tick"),
            "{err}"
        );
    }

    #[test]
    fn bad_events_are_refused_saying_why() {
        let ns = Namespace::default();
        let s = "attune.events.a.b";
        let at = "\"occurred_at\": \"2026-12-04T00:00:00Z\"";
        for (body, says) in [
            ("[]".to_string(), "not valid"),
            ("{\"id\": \"x\"}".to_string(), "not valid"),
            (
                format!("{{\"id\": \"a b\", \"trigger\": \"a.b\", {at}}}"),
                "event id",
            ),
            (
                format!("{{\"id\": \"x\", \"trigger\": \"ab\", {at}}}"),
                "event trigger \"ab\"",
            ),
            (
                format!("{{\"id\": \"x\", \"trigger\": \"a.b\", \"sensor\": \"*\", {at}}}"),
                "sensor",
            ),
            (
                r#"{"id": "x", "trigger": "a.b", "occurred_at": "soon"}"#.to_string(),
                "not valid",
            ),
            (
                format!(
                    "{{\"id\": \"x\", \"trigger\": \"a.b\", \"payload\": \"{}\", {at}}}",
                    "x".repeat(MAX_EVENT_BYTES)
                ),
                "at most",
            ),
        ] {
            let e = parse_event(&ns, s, body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{}: {e}", &body[..body.len().min(80)]);
        }
    }
}
