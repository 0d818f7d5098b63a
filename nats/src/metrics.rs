//! Prometheus metrics: the text exposition format and the small HTTP endpoint that serves it.
//!
//! The registry and the runner expose their metrics on an opt-in `--metrics-addr HOST:PORT`, at
//! `GET /metrics`, in the Prometheus text format (version 0.0.4). Both build the page from their
//! in-memory state on each scrape with an [`Exposition`]; [`serve`] answers scrapes. The endpoint
//! is read-only and bounded: a request head over 8 KiB, or one not sent within 5 s, is dropped.
//! `docs/operations.md` lists the metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;

/// The bounds of the duration histograms, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares metric `name` of `kind` (`counter`, `gauge`, `histogram`) with its help text.
    pub fn declare(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of `name` with `labels`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// Declares `name` and writes one sample per `(label value, value)` of `values`, each
    /// labelled `label`: the shape of every "by outcome" counter.
    pub fn by_label(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &[(&str, u64)],
    ) -> &mut Self {
        self.declare(name, kind, help);
        for (v, n) in values {
            self.sample(name, &[(label, v)], *n as f64);
        }
        self
    }

    /// The samples of a histogram `name` with `labels`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(&h.counts) {
            cumulative += count;
            let le = number(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value as the format escapes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A histogram over [`DURATION_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; above the last bound, none).
    counts: [u64; DURATION_BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl Histogram {
    /// Records one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Counters and histograms keyed by label values, shared between the code that counts and the
/// page that shows them.
#[derive(Debug, Default)]
pub struct Family<K: Ord, V> {
    values: Mutex<BTreeMap<K, V>>,
}

impl<K: Ord + Clone, V: Default + Clone> Family<K, V> {
    /// Changes the value of `key` with `f`.
    pub fn update(&self, key: K, f: impl FnOnce(&mut V)) {
        f(self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default());
    }

    /// A copy of every value.
    pub fn snapshot(&self) -> Vec<(K, V)> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The most bytes of a request head.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `addr` with the page `render` builds, until `shutdown`. Binding
/// fails at once (a port in use is the operator's to fix); each connection is one request.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    mut shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.recv() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting a metrics connection failed");
                        continue;
                    }
                },
            };
            let render = render.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, render).await {
                    debug!(%peer, error = %e, "metrics request");
                }
            });
        }
    }))
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(READ_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let ok = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, body, kind) = if ok {
        (
            "200 OK",
            render(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served\n".to_string(),
            "text/plain",
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_help_types_escaped_labels_and_cumulative_buckets() {
        let mut h = Histogram::default();
        h.observe(0.002);
        h.observe(0.2);
        h.observe(100.0);
        let mut p = Exposition::new();
        p.declare("x_total", "counter", "Things.")
            .sample("x_total", &[("a", "q\"\\\n")], 3.0);
        p.declare("d_seconds", "histogram", "Durations.")
            .histogram("d_seconds", &[("a", "b")], &h);
        let text = p.finish();
        assert!(
            text.contains("# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{a=\"b\",le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{a=\"b\",le=\"0.25\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("d_seconds_count{a=\"b\"} 3\n"), "{text}");
    }
}
