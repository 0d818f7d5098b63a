//! The `attune-runner` micro service and one endpoint per served version.
//!
//! Each endpoint subscribes `attune.invoke.<runtime>.<version>` in queue group `attune` (one
//! request reaches one runner) with metadata naming the runtime, the version, the host, the
//! pinned binary and the detected full version, so `nats micro info attune-runner` shows what
//! each runner really has. Its loop hands every request to
//! [`Dispatcher::admit`](crate::service::Dispatcher::admit).
//!
//! An endpoint lives exactly as long as its version is served: when re-verification fails (or
//! the version is unregistered) [`Endpoints::remove`] unsubscribes it, so the server sends its
//! requests to the runners that still have the version (or answers "no responders" at once)
//! instead of to this one, which could only refuse them. Requests already delivered are still
//! admitted and answered. A version that verifies again gets a new endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::service::{Service, ServiceExt};
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
    service: tokio::sync::Mutex<Option<Service>>,
    /// Subjects with an endpoint, each with the trigger that unsubscribes it.
    started: std::sync::Mutex<HashMap<String, ShutdownTrigger>>,
    /// The endpoint loops, joined on drain.
    loops: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Endpoints {
    /// Starts the `attune-runner` service (no endpoints yet).
    pub async fn start(
        client: &async_nats::Client,
        config: &RunnerConfig,
    ) -> Result<Self, async_nats::Error> {
        let service = client
            .service_builder()
            .description(format!("Attune runner {}", config.name))
            .metadata(HashMap::from([
                ("host".to_string(), config.host.clone()),
                ("runner".to_string(), config.name.clone()),
            ]))
            .queue_group(RUNNER_QUEUE_GROUP)
            .start(RUNNER_SERVICE, env!("CARGO_PKG_VERSION"))
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
    ) -> Result<(), async_nats::Error> {
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
            .endpoint_builder()
            .name(key.endpoint())
            .metadata(metadata)
            .queue_group(RUNNER_QUEUE_GROUP)
            .add(subject.clone())
            .await?;
        drop(guard);
        info!(%subject, "serving");
        let (trigger, mut removed) = shutdown::channel();
        self.started
            .lock()
            .expect("not poisoned")
            .insert(subject.clone(), trigger);
        let dispatcher = dispatcher.clone();
        let task = tokio::spawn(
            async move {
                let admit = |request: async_nats::service::Request| {
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
                // Ends when the service stops, or the version stops being served, and every
                // request already delivered has been admitted.
                loop {
                    tokio::select! {
                        request = endpoint.next() => match request {
                            Some(request) => admit(request).await,
                            None => break,
                        },
                        _ = removed.recv() => {
                            if let Err(e) = endpoint.stop().await {
                                warn!(error = %e, "unsubscribing failed");
                            }
                            while let Some(request) = endpoint.next().await {
                                admit(request).await;
                            }
                            info!("no longer served: unsubscribed");
                            break;
                        }
                    }
                }
                debug!("endpoint closed");
            }
            .instrument(tracing::info_span!("endpoint", %subject)),
        );
        self.loops.lock().expect("not poisoned").push(task);
        Ok(())
    }

    /// Unsubscribes the endpoint of `key` (if it has one); requests already delivered to it are
    /// still admitted. The version can be [added](Self::add) again later.
    pub fn remove(&self, dispatcher: &Dispatcher, key: &attune_nats::VersionKey) {
        let subject = key.invoke_subject(&dispatcher.config.namespace);
        if let Some(trigger) = self.started.lock().expect("not poisoned").remove(&subject) {
            trigger.trigger();
        }
    }

    /// Stops taking work: unsubscribes every endpoint, then waits until each loop has admitted
    /// the requests already delivered to it.
    pub async fn stop(&self) {
        if let Some(service) = self.service.lock().await.take() {
            let _ = service.stop().await;
        }
        let loops = std::mem::take(&mut *self.loops.lock().expect("not poisoned"));
        for l in loops {
            let _ = l.await;
        }
    }
}
