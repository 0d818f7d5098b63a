//! The `attune-runner` micro service and one endpoint per served version.
//!
//! Each endpoint subscribes `attune.invoke.<runtime>.<version>` in queue group `attune` (one
//! request reaches one runner) with metadata naming the runtime, the version, the host, the
//! pinned binary and the detected full version, so `nats micro info attune-runner` shows what
//! each runner really has. Its loop hands every request to
//! [`Dispatcher::admit`](crate::service::Dispatcher::admit).
//!
//! An endpoint lives exactly as long as its version is served: when re-verification fails (or
//! the version is unregistered) [`Endpoints::remove`] drains it, so the server sends its
//! requests to the runners that still have the version (or answers "no responders" at once)
//! instead of to this one, which could only refuse them. Every request the endpoint has already
//! received is still admitted and answered ([`attune_nats::micro`]; a plain unsubscription
//! threw those away), for at most [`DRAIN_WAIT`]. A version that verifies again gets a new
//! endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use attune_nats::micro::{MicroService, Request, ServiceConfig, DRAIN_WAIT};
use attune_nats::shutdown::{self, ShutdownTrigger};
use attune_nats::subject::{RUNNER_QUEUE_GROUP, RUNNER_SERVICE};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::catalog::Served;
use crate::config::RunnerConfig;
use crate::service::Dispatcher;

/// The micro service and its endpoint loops.
#[derive(Debug)]
pub struct Endpoints {
    /// The `attune-runner` service; `None` once stopped.
    service: tokio::sync::Mutex<Option<MicroService>>,
    /// Subjects with an endpoint, each with the trigger that drains it.
    started: std::sync::Mutex<HashMap<String, ShutdownTrigger>>,
    /// The endpoint loops, joined on drain.
    loops: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Endpoints {
    /// Starts the `attune-runner` service (no endpoints yet).
    pub async fn start(
        client: &async_nats::Client,
        config: &RunnerConfig,
    ) -> Result<Self, attune_nats::micro::MicroError> {
        let service = MicroService::start(
            client,
            ServiceConfig {
                name: RUNNER_SERVICE.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                description: format!("Attune runner {}", config.name),
                metadata: HashMap::from([
                    ("host".to_string(), config.host.clone()),
                    ("runner".to_string(), config.name.clone()),
                ]),
            },
        )
        .await?;
        Ok(Endpoints {
            service: tokio::sync::Mutex::new(Some(service)),
            started: Default::default(),
            loops: Default::default(),
        })
    }

    /// Adds the endpoint of one served version (once) and starts its loop.
    pub async fn add(
        &self,
        dispatcher: &Arc<Dispatcher>,
        served: &Served,
    ) -> Result<(), attune_nats::micro::MicroError> {
        let v = &served.verified;
        let key = Arc::new(v.key.clone());
        let subject = key.invoke_subject(&dispatcher.config.namespace);
        if self
            .started
            .lock()
            .expect("not poisoned")
            .contains_key(&subject)
        {
            return Ok(());
        }
        let guard = self.service.lock().await;
        let Some(service) = guard.as_ref() else {
            return Ok(());
        };
        let mut metadata = HashMap::from([
            ("runtime".to_string(), key.runtime.clone()),
            ("version".to_string(), key.version.clone()),
            ("host".to_string(), dispatcher.config.host.clone()),
            ("binary".to_string(), v.binary.display().to_string()),
        ]);
        if let Some(d) = &v.detected_version {
            metadata.insert("detected_version".to_string(), d.clone());
        }
        let mut endpoint = service
            .add_endpoint(&key.endpoint(), &subject, RUNNER_QUEUE_GROUP, metadata)
            .await?;
        info!(%subject, "serving");
        // Recorded while the service is still held, so a concurrent `stop` drains and joins
        // this endpoint too.
        let (trigger, mut removed) = shutdown::channel();
        self.started
            .lock()
            .expect("not poisoned")
            .insert(subject.clone(), trigger);
        let dispatcher = dispatcher.clone();
        let task = tokio::spawn(
            async move {
                let admit = |request: Request| {
                    let dispatcher = &dispatcher;
                    let key = key.clone();
                    async move {
                        if attune_nats::reply::is_stream_replay(request.message.reply.as_deref()) {
                            warn!("dropped a stream replay sent to an invoke subject");
                            return;
                        }
                        dispatcher.admit(request, key).await;
                    }
                };
                // Ends when the runner stops or the version stops being served, once every
                // request the server routed here before the drain has been admitted.
                loop {
                    tokio::select! {
                        request = endpoint.next() => match request {
                            Some(request) => admit(request).await,
                            None => break,
                        },
                        _ = removed.recv() => {
                            if let Err(e) = endpoint.drain().await {
                                warn!(error = %e, "draining the endpoint failed");
                            }
                            let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
                            while let Ok(Some(request)) =
                                tokio::time::timeout_at(deadline, endpoint.next()).await
                            {
                                admit(request).await;
                            }
                            info!("no longer served: drained");
                            break;
                        }
                    }
                }
                debug!("endpoint closed");
            }
            .instrument(tracing::info_span!("endpoint", %subject)),
        );
        self.loops.lock().expect("not poisoned").push(task);
        drop(guard);
        Ok(())
    }

    /// Drains the endpoint of `key` (if it has one): requests already on their way to it are
    /// still admitted. The version can be [added](Self::add) again later.
    pub fn remove(&self, dispatcher: &Dispatcher, key: &attune_nats::VersionKey) {
        let subject = key.invoke_subject(&dispatcher.config.namespace);
        if let Some(trigger) = self.started.lock().expect("not poisoned").remove(&subject) {
            trigger.trigger();
        }
    }

    /// Stops taking work: drains every endpoint, then waits until each loop has admitted the
    /// requests it had received (each for at most [`DRAIN_WAIT`]).
    pub async fn stop(&self) {
        if let Some(service) = self.service.lock().await.take() {
            service.stop();
        }
        for (_, trigger) in self.started.lock().expect("not poisoned").drain() {
            trigger.trigger();
        }
        let loops = std::mem::take(&mut *self.loops.lock().expect("not poisoned"));
        for l in loops {
            let _ = l.await;
        }
    }
}
