//! Live output: the lines an action prints, published on `attune.output.<id>` while it runs.
//!
//! Capture ([`crate::execute`]) hands every chunk it reads to the execution's [`Tap`], which cuts
//! it into lines (at most [`LIVE_LINE_BYTES`]), masks the secret parameter values and queues one
//! message per line for the runner's one publishing task. Nothing here can slow or fail the
//! execution: the queue is bounded and a full queue drops the line; each execution may send 200
//! lines at once and then 100 a second, and 1 MiB in all; what is dropped is counted and said
//! in the execution's last message (`end`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use attune_nats::executions::{mask_secrets, OutputMessage, OutputStream, LIVE_LINE_BYTES};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

/// Messages waiting for the publishing task, across all executions.
const QUEUE: usize = 4096;
/// Lines an execution may send at once.
const BURST: f64 = 200.0;
/// Lines an execution may send per second after the burst.
const PER_SECOND: f64 = 100.0;
/// Bytes of lines one execution may send in all.
const MAX_BYTES: usize = 1024 * 1024;

/// The runner's publisher of live output.
#[derive(Debug, Clone)]
pub struct Live {
    tx: mpsc::Sender<(String, Bytes)>,
}

impl Live {
    /// Starts the publishing task on `client`; it ends when every [`Live`] and [`Tap`] is gone.
    pub fn start(client: async_nats::Client) -> Live {
        let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(QUEUE);
        tokio::spawn(async move {
            while let Some((subject, body)) = rx.recv().await {
                if let Err(e) = client.publish(subject, body).await {
                    debug!(error = %e, "could not publish live output");
                }
            }
        });
        Live { tx }
    }

    /// The tap of one execution publishing on `subject`, masking `secrets`.
    pub fn tap(&self, subject: String, secrets: Vec<String>) -> Arc<Tap> {
        Arc::new(Tap {
            tx: self.tx.clone(),
            subject,
            secrets,
            state: Mutex::new(State {
                partial: [Vec::new(), Vec::new()],
                tokens: BURST,
                refilled: Instant::now(),
                sent_bytes: 0,
                dropped: 0,
            }),
        })
    }
}

/// One execution's live output.
#[derive(Debug)]
pub struct Tap {
    tx: mpsc::Sender<(String, Bytes)>,
    subject: String,
    secrets: Vec<String>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The unfinished line of stdout and of stderr.
    partial: [Vec<u8>; 2],
    tokens: f64,
    refilled: Instant,
    sent_bytes: usize,
    dropped: u64,
}

fn index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

impl Tap {
    /// Takes a chunk the process wrote on `stream`: every line it completes is sent.
    pub fn feed(&self, stream: OutputStream, chunk: &[u8]) {
        let mut st = self.state.lock().expect("never poisoned");
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, done) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[(part.len() + usize::from(done)).min(rest.len())..];
            let buf = &mut st.partial[index(stream)];
            buf.extend_from_slice(part);
            if done || buf.len() >= LIVE_LINE_BYTES {
                let line = std::mem::take(buf);
                self.send_line(&mut st, stream, &line);
            }
        }
    }

    /// Sends what is left of unfinished lines, then the end with the dropped count.
    pub fn finish(&self) {
        let mut st = self.state.lock().expect("never poisoned");
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let line = std::mem::take(&mut st.partial[index(stream)]);
            if !line.is_empty() {
                self.send_line(&mut st, stream, &line);
            }
        }
        let end = OutputMessage {
            stream: None,
            line: None,
            end: true,
            dropped: st.dropped,
        };
        self.send(&end);
    }

    fn send_line(&self, st: &mut State, stream: OutputStream, line: &[u8]) {
        let now = Instant::now();
        st.tokens =
            (st.tokens + now.duration_since(st.refilled).as_secs_f64() * PER_SECOND).min(BURST);
        st.refilled = now;
        // Long lines arrive in LIVE_LINE_BYTES pieces; cut what a chunk boundary left over.
        for piece in line.chunks(LIVE_LINE_BYTES) {
            if st.tokens < 1.0 || st.sent_bytes + piece.len() > MAX_BYTES {
                st.dropped += 1;
                continue;
            }
            let text = mask_secrets(&String::from_utf8_lossy(piece), &self.secrets);
            let msg = OutputMessage {
                stream: Some(stream),
                line: Some(text),
                end: false,
                dropped: 0,
            };
            if self.send(&msg) {
                st.tokens -= 1.0;
                st.sent_bytes += piece.len();
            } else {
                st.dropped += 1;
            }
        }
    }

    /// Queues `msg`; `false` when the queue is full.
    fn send(&self, msg: &OutputMessage) -> bool {
        let body = Bytes::from(serde_json::to_vec(msg).expect("messages serialise"));
        self.tx.try_send((self.subject.clone(), body)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(rx: &mut mpsc::Receiver<(String, Bytes)>) -> Vec<OutputMessage> {
        let mut out = Vec::new();
        while let Ok((_, b)) = rx.try_recv() {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        out
    }

    #[test]
    fn chunks_become_masked_lines_and_the_rest_is_counted() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let live = Live { tx };
        let tap = live.tap("attune.output.x".into(), vec!["s3cret".into()]);
        tap.feed(OutputStream::Stdout, b"one\ntw");
        tap.feed(OutputStream::Stderr, b"err s3cret\n");
        tap.feed(OutputStream::Stdout, b"o\nlast");
        tap.finish();
        let got = lines(&mut rx);
        let text: Vec<(Option<OutputStream>, Option<String>, bool)> = got
            .iter()
            .map(|m| (m.stream, m.line.clone(), m.end))
            .collect();
        assert_eq!(
            text,
            [
                (Some(OutputStream::Stdout), Some("one".into()), false),
                (Some(OutputStream::Stderr), Some("err ***".into()), false),
                (Some(OutputStream::Stdout), Some("two".into()), false),
                (Some(OutputStream::Stdout), Some("last".into()), false),
                (None, None, true),
            ]
        );

        // A flood: the burst goes out, the rest is counted in the end message.
        let tap = live.tap("attune.output.y".into(), vec![]);
        tap.feed(OutputStream::Stdout, "x\n".repeat(1000).as_bytes());
        tap.finish();
        let got = lines(&mut rx);
        let sent = got.iter().filter(|m| m.line.is_some()).count();
        let end = got.last().unwrap();
        assert!(
            end.end && sent as u64 + end.dropped == 1000,
            "{sent} + {}",
            end.dropped
        );
        assert!((200..=210).contains(&sent), "{sent}");
    }
}
