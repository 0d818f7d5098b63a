//! A bounded fuzz run of every responder, against the real binaries and a real nats-server.
//!
//! Random and mutated request bodies and headers (generated with proptest from a fixed seed, so a
//! failure can be replayed) are sent to:
//! - a runner endpoint (`attune.invoke.shell.default`);
//! - the router and async enqueue (`attune.action.…`, with and without `Attune-Async`);
//! - every registry operation: the read-only ones on the same stack, the state-changing ones
//!   (`pack.register`, `pack.remove`, `version.set_default`, `version.set_enabled`) against a
//!   registry of their own, so they cannot starve the first stack of its packs;
//! - the registry's rule evaluation, through random and mutated events stored in the events
//!   stream (each one acknowledged by the stream before the next);
//! - a runner's sensor reading, through a shell sensor that prints random and mutated lines
//!   (and one too long): every non-blank line must end up published or refused, and counted.
//!
//! Every case must get a reply before its timeout; afterwards no service may have written
//! `panicked at`, every service must still run, and a valid request must still succeed.
//!
//! Bounds: `ATTUNE_FUZZ_SECONDS` (default 40) of sending in all and at most
//! `ATTUNE_FUZZ_CASES` (default 20000) cases; `ATTUNE_FUZZ_SEED` (a number) changes the seed.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::wire::SensorLease;
use attune_nats::{InvocationReply, Namespace, Status};
use attune_testkit::{copy_dir, eventually, workspace_root, NatsServer, ServiceProcess};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Number, Value};

/// How long one case may wait for its reply: far more than any answer takes.
const CASE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the stacks may take to come up.
const WAIT: Duration = Duration::from_secs(60);

/// Subjects served by the first stack's runner, router and enqueue.
const INVOKE_SUBJECTS: &[&str] = &[
    "attune.invoke.shell.default",
    "attune.action.core.echo",
    "attune.action.core.noop",
    "attune.action.core.nope",
    "attune.action.x",
    "attune.action.core.echo.more",
];
/// Read-only registry operations.
const READ_OPS: &[&str] = &[
    "pack.list",
    "pack.get",
    "runtime.list",
    "runtime.get",
    "action.list",
    "action.get",
    "resolve",
    "runner.list",
    "rule.list",
    "rule.get",
    "sensor.list",
    "sensor.get",
    "trigger.list",
    "trigger.get",
];
/// State-changing registry operations, fuzzed against their own registry.
const WRITE_OPS: &[&str] = &[
    "pack.register",
    "pack.remove",
    "version.set_default",
    "version.set_enabled",
    "rule.set_enabled",
    "sensor.set_enabled",
];
/// Event subjects, whose messages the registry evaluates against rules.
const EVENT_SUBJECTS: &[&str] = &[
    "attune.events.core.tick",
    "attune.events.x.y",
    "attune.events.core.tick.more",
];

/// Strings chosen to break things: control characters, paths, subject metacharacters, numbers.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::sample::select(vec![
            "",
            " ",
            "\n",
            "\r\n",
            "\0",
            "a\nb",
            "core.echo",
            "core.nope",
            "core.echo\n",
            "*",
            ">",
            "..",
            "../../etc/passwd",
            "/",
            "/proc/self/mem",
            "/tmp",
            "python",
            "3.12",
            "default",
            "shell",
            "core",
            "x:y",
            "a b",
            "é",
            "sha256-",
            "true",
            "1e300",
            "-1",
            "NaN",
        ])
        .prop_map(str::to_string),
        (
            prop::sample::select(vec!["core", "x", "", "hostile"]),
            prop::sample::select(vec!["echo", "noop", "py_info", "nope", ""]),
        )
            .prop_map(|(p, a)| format!("{p}.{a}")),
        (0usize..4).prop_map(|n| "x".repeat(60 * n * n + 1)),
    ]
}

/// Any JSON value, a few levels deep, strings from [`nasty`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        nasty().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((nasty(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request body: raw bytes, any JSON, or a plausible request with some fields mutated.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = |v: BoxedStrategy<Value>| prop::option::of(v);
    let plausible = (
        field(prop_oneof![nasty().prop_map(Value::from), json_value()].boxed()),
        field(prop_oneof![nasty().prop_map(Value::from), json_value()].boxed()),
        field(
            prop_oneof![
                Just(json!({"message": "hi"})),
                prop::collection::vec((nasty(), json_value()), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                json_value(),
            ]
            .boxed(),
        ),
        field(
            prop_oneof![
                any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
                Just(json!(0)),
                Just(json!(-5)),
                Just(json!(1e300)),
                json_value(),
            ]
            .boxed(),
        ),
        prop::collection::vec((nasty(), json_value()), 0..3),
    )
        .prop_map(|(id, action, parameters, timeout, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [
                ("id", id),
                ("action", action),
                ("parameters", parameters),
                ("timeout_seconds", timeout),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            serde_json::to_vec(&m).unwrap()
        });
    prop_oneof![
        3 => plausible,
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(Vec::new()),
    ]
}

/// A registry request body: valid-looking fields with nasty values, or anything at all.
fn api_body() -> impl Strategy<Value = Vec<u8>> {
    let core = workspace_root().join("packs").join("core");
    let paths = prop_oneof![
        nasty(),
        Just(core.to_string_lossy().into_owned()),
        Just("/proc/self".to_string()),
    ];
    let fields = (
        prop::option::of(paths),
        prop::option::of(nasty()),
        prop::option::of(nasty()),
        prop::option::of(nasty()),
        prop::option::of(any::<bool>()),
        prop::option::of(nasty()),
    )
        .prop_map(|(path, reference, name, version, enabled, digest)| {
            let mut m = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            };
            put("path", path.map(Value::from));
            put("ref", reference.clone().map(Value::from));
            put("name", name.clone().map(Value::from));
            put("runtime", name.map(Value::from));
            put("version", version.map(Value::from));
            put("enabled", enabled.map(Value::from));
            put("digest", digest.map(Value::from));
            put("action", reference.clone().map(Value::from));
            put("constraint", reference.map(Value::from));
            serde_json::to_vec(&m).unwrap()
        });
    prop_oneof![3 => fields, 1 => body()]
}

/// Headers: none, the async switch in several spellings, a message id, or random ones.
fn headers() -> impl Strategy<Value = Option<Vec<(String, String)>>> {
    prop::option::of(prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec!["true", "TRUE", " true ", "false", "yes", ""])
                .prop_map(|v| ("Attune-Async".to_string(), v.to_string())),
            nasty().prop_map(|v| ("Nats-Msg-Id".to_string(), v)),
            (nasty(), nasty()),
        ],
        0..3,
    ))
}

/// Builds a header map, skipping names and values NATS would not accept (the fuzzer itself must
/// not panic in the client).
fn header_map(pairs: &[(String, String)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::from_str(k), HeaderValue::from_str(v)) {
            map.insert(k, v);
        }
    }
    (!map.is_empty()).then_some(map)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A nats-server with a registry (and optionally a shell runner) as child processes.
struct Stack {
    /// Kept for its lifetime: the server stops when the stack is dropped.
    _server: NatsServer,
    nats: async_nats::Client,
    services: Vec<ServiceProcess>,
}

impl Stack {
    async fn start(dir: &Path, name: &str, packs: &Path, with_runner: bool) -> Stack {
        let server = NatsServer::start();
        let nats = server.connect().await;
        let work = dir.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let data = work.join("registry");
        let mut services = vec![ServiceProcess::start(
            &format!("{name}-registry"),
            &server,
            &[
                "registry",
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--packs",
                packs.to_str().unwrap(),
            ],
            None,
            &work,
        )];
        if with_runner {
            services.push(ServiceProcess::start(
                &format!("{name}-runner"),
                &server,
                &[
                    "runner",
                    "start",
                    "--runtimes",
                    "shell",
                    "--envs-dir",
                    work.join("envs").to_str().unwrap(),
                    "--cache-dir",
                    work.join("cache").to_str().unwrap(),
                ],
                None,
                &work,
            ));
        }
        Stack {
            _server: server,
            nats,
            services,
        }
    }

    /// Sends one case; `Err` says why no reply came.
    async fn ask(
        &self,
        subject: &str,
        body: &[u8],
        headers: Option<HeaderMap>,
    ) -> Result<async_nats::Message, String> {
        let mut req = async_nats::Request::new()
            .payload(body.to_vec().into())
            .timeout(Some(CASE_TIMEOUT));
        if let Some(h) = headers {
            req = req.headers(h);
        }
        self.nats
            .send_request(subject.to_string(), req)
            .await
            .map_err(|e| e.to_string())
    }

    /// `core.echo` by name succeeds.
    async fn echo_works(&self) -> bool {
        let body = br#"{"parameters":{"message":"still here"}}"#;
        match self.ask("attune.action.core.echo", body, None).await {
            Ok(msg) => serde_json::from_slice::<InvocationReply>(&msg.payload)
                .is_ok_and(|r| r.status == Status::Succeeded),
            Err(_) => false,
        }
    }

    /// Every service still runs and none has panicked.
    fn assert_healthy(&mut self) {
        for s in &mut self.services {
            let stderr = s.stderr();
            assert!(
                !stderr.contains("panicked at"),
                "a service panicked:\n{stderr}"
            );
            assert!(s.is_running(), "a service died:\n{stderr}");
        }
    }
}

/// Sends generated cases until `budget` is spent or `cases` are sent; returns how many were.
async fn fuzz(
    stack: &Stack,
    runner: &mut TestRunner,
    subjects: &[String],
    bodies: &BoxedStrategy<Vec<u8>>,
    budget: Duration,
    cases: u64,
) -> u64 {
    let subject = prop::sample::select(subjects.to_vec());
    let case = (subject, bodies.clone(), headers());
    let started = Instant::now();
    let mut sent = 0;
    while sent < cases && started.elapsed() < budget {
        let (subject, body, headers) = case.new_tree(runner).expect("generate a case").current();
        let headers = headers.as_deref().and_then(header_map);
        if let Err(e) = stack.ask(&subject, &body, headers.clone()).await {
            panic!(
                "no reply on {subject} (case {sent}): {e}\nbody: {:?}\nheaders: {headers:?}",
                String::from_utf8_lossy(&body)
            );
        }
        sent += 1;
    }
    sent
}

/// How many lines the fuzz sensor prints (plus one too long for an event).
const SENSOR_LINES: usize = 1500;

/// Writes pack `fuzz`: a shell sensor `noise` that prints a file of generated lines (random
/// bodies, and envelopes naming declared, undeclared and foreign triggers with random payloads,
/// one over the line cap), then waits. Returns how many non-blank lines the runner will read.
fn write_fuzz_sensor(dir: &Path, runner: &mut TestRunner) -> u64 {
    let trigger = prop::sample::select(vec!["a", "b", "c", "fuzz.a", "fuzz.b", "core.a", ""]);
    let envelope = (trigger, json_value()).prop_map(|(t, p)| {
        serde_json::to_vec(&json!({"trigger": t, "payload": p})).expect("serialises")
    });
    let line = prop_oneof![
        body(),
        envelope,
        json_value().prop_map(|v| v.to_string().into_bytes())
    ];
    let mut text = Vec::new();
    for _ in 0..SENSOR_LINES {
        text.extend(line.new_tree(runner).expect("generate a line").current());
        text.push(b'\n');
    }
    text.extend(std::iter::repeat_n(b'x', 300 * 1024));
    text.push(b'\n');
    let counted = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64;
    let files: [(&str, &[u8]); 4] = [
        ("pack.yaml", b"ref: fuzz\nversion: 1.0.0\n"),
        (
            "sensors/noise.yaml",
            b"name: noise\nrunner_type: shell\nentry_point: noise.sh\ntrigger_types:\n  - name: a\n    \
              payload_schema: {type: object, required: [x], properties: {x: {type: integer}}}\n  - name: b\n",
        ),
        ("sensors/noise.sh", b"cat sensors/lines.bin\nexec sleep 3600\n"),
        ("sensors/lines.bin", &text),
    ];
    for (path, bytes) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    counted
}

/// Publishes random and mutated events into the events stream, each stored before the next.
async fn fuzz_events(stack: &Stack, runner: &mut TestRunner, budget: Duration, cases: u64) -> u64 {
    let js = async_nats::jetstream::new(stack.nats.clone());
    let subjects: Vec<String> = EVENT_SUBJECTS.iter().map(|s| s.to_string()).collect();
    let case = (prop::sample::select(subjects), body());
    let started = Instant::now();
    let mut sent = 0;
    while sent < cases && started.elapsed() < budget {
        let (subject, body) = case.new_tree(runner).expect("generate a case").current();
        let stored = async { js.publish(subject.clone(), body.into()).await?.await };
        match tokio::time::timeout(CASE_TIMEOUT, stored).await {
            Ok(Ok(_)) => {}
            // The stream refuses what it must (a body over its size limit): not the registry's.
            Ok(Err(e)) => eprintln!("event on {subject} not stored: {e}"),
            Err(_) => panic!("the events stream did not answer on {subject} (case {sent})"),
        }
        sent += 1;
    }
    sent
}

#[tokio::test]
async fn every_responder_answers_random_and_mutated_requests_and_keeps_serving() {
    let seconds = env_number("ATTUNE_FUZZ_SECONDS", 40);
    let cases = env_number("ATTUNE_FUZZ_CASES", 20000);
    let seed = env_number("ATTUNE_FUZZ_SEED", 7);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );

    let dir = tempfile::tempdir().unwrap();
    let core = workspace_root().join("packs").join("core");
    let packs = dir.path().join("packs");
    copy_dir(&core, &packs.join("core"));
    let expected_lines = write_fuzz_sensor(&packs.join("fuzz"), &mut runner);
    let (mut main, mut own) = tokio::join!(
        Stack::start(dir.path(), "main", &packs, true),
        Stack::start(dir.path(), "writes", &core, false)
    );
    eventually(WAIT, "core.echo works before fuzzing", || async {
        main.echo_works().await.then_some(())
    })
    .await;
    let api = |op: &str| format!("attune.registry.{op}");
    eventually(WAIT, "the second registry answers", || async {
        own.ask(&api("pack.list"), b"{}", None).await.ok()
    })
    .await;

    let invoke: Vec<String> = INVOKE_SUBJECTS.iter().map(|s| s.to_string()).collect();
    let reads: Vec<String> = READ_OPS.iter().map(|op| api(op)).collect();
    let writes: Vec<String> = WRITE_OPS.iter().map(|op| api(op)).collect();
    let budget = Duration::from_secs(seconds);
    let sent_invoke = fuzz(
        &main,
        &mut runner,
        &invoke,
        &body().boxed(),
        budget / 2,
        cases / 2,
    )
    .await;
    let sent_reads = fuzz(
        &main,
        &mut runner,
        &reads,
        &api_body().boxed(),
        budget / 4,
        cases / 4,
    )
    .await;
    let sent_writes = fuzz(
        &own,
        &mut runner,
        &writes,
        &api_body().boxed(),
        budget / 4,
        cases / 4,
    )
    .await;
    let sent_events = fuzz_events(&main, &mut runner, budget / 8, cases / 8).await;
    eprintln!(
        "fuzz (seed {seed}): {sent_invoke} invocations, {sent_reads} registry reads, {sent_writes} registry writes, {sent_events} events; every one answered"
    );
    assert!(sent_invoke > 0 && sent_reads > 0 && sent_writes > 0 && sent_events > 0);

    // Every line the sensor printed was published or refused, and counted.
    let js = async_nats::jetstream::new(main.nats.clone());
    let leases = open_kv(&js, &Namespace::default(), Bucket::Sensors)
        .await
        .expect("the sensors bucket");
    let lease = eventually(WAIT, "every sensor line counted", || async {
        let bytes = leases.get("fuzz.noise").await.ok().flatten()?;
        let lease: SensorLease = serde_json::from_slice(&bytes).ok()?;
        (lease.events + lease.invalid >= expected_lines).then_some(lease)
    })
    .await;
    eprintln!(
        "fuzz: the sensor printed {expected_lines} lines: {} published, {} refused",
        lease.events, lease.invalid
    );
    assert_eq!(lease.events + lease.invalid, expected_lines, "{lease:?}");
    assert!(lease.events > 0 && lease.invalid > 0, "{lease:?}");
    assert_eq!(lease.restarts, 0, "{lease:?}");

    // Still serving, and nobody panicked.
    assert!(main.echo_works().await, "a valid invocation still succeeds");
    let listed = own
        .ask(&api("pack.list"), b"{}", None)
        .await
        .expect("the second registry still answers");
    assert!(serde_json::from_slice::<Value>(&listed.payload).is_ok());
    main.assert_healthy();
    own.assert_healthy();
}
