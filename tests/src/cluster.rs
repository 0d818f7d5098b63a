//! A real nats-server cluster with JetStream, on loopback, for tests of node loss.
//!
//! Each node is its own `nats-server` process with a distinct `server_name` (`n0`, `n1`, ...),
//! its own JetStream store directory, a client port, a route port and a monitoring port, all
//! routed to each other in one cluster. [`NatsCluster::start`] returns once every node is ready
//! and JetStream has elected its meta leader, so a registry started right after can create
//! replicated streams. Nodes can be killed (SIGKILL, as a host failure) and started again with
//! their store, on the same ports.
//!
//! Which node a client is on is read from the server's own `/connz` (by connection name), not
//! assumed from the order of a server list: NATS clients pick a server of the list at random.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attune_nats::local::INSTALL_HINT;
use serde_json::Value;

use crate::{find_nats_server, free_port};

/// The cluster name every node is configured with.
const CLUSTER_NAME: &str = "attune-test";
/// How long a node may take to say it is ready, and JetStream to elect its meta leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One node: its ports, directory and process.
struct Node {
    /// `server_name`, `n<i>`: what JetStream reports as a stream's leader.
    name: String,
    /// Client port.
    port: u16,
    /// Route port the other nodes dial.
    route: u16,
    /// Monitoring (HTTP) port, for `/connz` and `/jsz`.
    http: u16,
    /// Config, store and logs.
    dir: PathBuf,
    /// The process while it runs.
    child: Option<Child>,
    /// How many times it was started, to keep each run's log apart.
    starts: usize,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("server-{}.log", self.starts))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A cluster of real nats-servers with JetStream, stopped on drop.
pub struct NatsCluster {
    /// The nodes, in order.
    nodes: Vec<Node>,
    /// The nats-server binary.
    binary: PathBuf,
    /// Holds every node's directory.
    _root: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes routed into one cluster with JetStream, and waits until every node is
    /// ready and knows the JetStream meta leader. Panics with an install hint without
    /// `nats-server`, and with the nodes' logs when the cluster does not form.
    pub fn start(size: usize) -> NatsCluster {
        assert!(size >= 1, "a cluster has at least one node");
        let binary = find_nats_server()
            .unwrap_or_else(|| panic!("nats-server is not installed: {INSTALL_HINT}"));
        let root = tempfile::tempdir().expect("temp dir for the cluster");
        let mut cluster = NatsCluster {
            nodes: Vec::new(),
            binary,
            _root: root,
        };
        // Another test may take a port between `free_port` and the bind; then a node exits at
        // once, and the whole cluster starts again on fresh ports.
        for attempt in 0..5 {
            cluster.nodes = (0..size)
                .map(|i| Node {
                    name: format!("n{i}"),
                    port: free_port(),
                    route: free_port(),
                    http: free_port(),
                    dir: cluster._root.path().join(format!("try{attempt}-n{i}")),
                    child: None,
                    starts: 0,
                })
                .collect();
            for i in 0..size {
                cluster.write_config(i);
                cluster.spawn(i);
            }
            if (0..size).all(|i| cluster.wait_ready(i)) {
                cluster.wait_jetstream();
                return cluster;
            }
            for i in 0..size {
                cluster.kill(i);
            }
        }
        panic!("the nats-server cluster could not bind free ports in 5 tries");
    }

    /// Writes node `i`'s configuration: its ports, its store, and routes to every other node.
    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        fs::create_dir_all(&node.dir).expect("node dir");
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route))
            .collect();
        let conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            name = node.name,
            port = node.port,
            http = node.http,
            store = node.dir.join("js").display(),
            route = node.route,
            routes = routes.join(", "),
        );
        fs::write(node.dir.join("server.conf"), conf).expect("write node config");
    }

    /// Starts node `i`'s process, logging to a new file.
    fn spawn(&mut self, i: usize) {
        let binary = self.binary.clone();
        let node = &mut self.nodes[i];
        node.starts += 1;
        let log = fs::File::create(node.log_path()).expect("node log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(node.dir.join("server.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        node.child = Some(child);
    }

    /// Waits until node `i` logs that it is ready (true), or exits (false: a port was taken).
    /// Readiness is read from the node's own log, never from a TCP connect that another test's
    /// server could answer.
    fn wait_ready(&mut self, i: usize) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let node = &mut self.nodes[i];
            if node.log().contains("Server is ready") {
                return true;
            }
            if let Some(child) = node.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    node.child = None;
                    return false;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not become ready within {READY_TIMEOUT:?}; log:\n{}",
                node.name,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node reports a JetStream meta leader (`/jsz`), and the leader
    /// reports every other running node as a current peer: before that, creating a replicated
    /// stream fails with "no suitable peers for placement".
    fn wait_jetstream(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        loop {
            let current_peers = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].child.is_some())
                .filter_map(|i| Some((i, http_get_json(self.nodes[i].http, "/jsz")?)))
                .find(|(i, jsz)| jsz["meta_cluster"]["leader"] == self.nodes[*i].name.as_str())
                .map(|(_, jsz)| jsz)
                .and_then(|jsz| jsz["meta_cluster"]["replicas"].as_array().cloned())
                .map(|replicas| {
                    replicas
                        .iter()
                        .filter(|r| r["current"] == true && r["offline"] != true)
                        .count()
                });
            if current_peers.is_some_and(|n| n + 1 >= running) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the JetStream meta leader did not see every node as a current peer within \
                 {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            loop {
                if self.meta_leader(i).is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "JetStream elected no meta leader within {READY_TIMEOUT:?}; log of {}:\n{}",
                    node.name,
                    node.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The JetStream meta leader node `i` knows of, if any.
    fn meta_leader(&self, i: usize) -> Option<String> {
        let jsz = http_get_json(self.nodes[i].http, "/jsz")?;
        let leader = jsz["meta_cluster"]["leader"].as_str()?;
        (!leader.is_empty()).then(|| leader.to_string())
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s client URL (`nats://127.0.0.1:PORT`).
    pub fn node(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's client URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node(i)).collect()
    }

    /// Every node's URL as one comma-separated list, as `--server` takes it.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The node's URLs starting at node `first` and wrapping around: the list an operator would
    /// write for a service near that node.
    pub fn url_list_from(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.node((first + k) % n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s `server_name` (`n<i>`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Kills node `i` (SIGKILL) and waits for it to exit: a host failure, no goodbye to the
    /// clients or the other nodes.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again with its store and ports, and waits until it is ready and knows the
    /// meta leader.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        assert!(
            self.wait_ready(i),
            "node {} could not start again on its ports; log:\n{}",
            self.nodes[i].name,
            self.nodes[i].log()
        );
        self.wait_jetstream();
    }

    /// Connects an async-nats client to the running nodes.
    pub async fn connect(&self) -> async_nats::Client {
        let up: Vec<String> = (0..self.nodes.len())
            .filter(|&i| self.is_up(i))
            .map(|i| self.node(i))
            .collect();
        async_nats::connect(up.as_slice())
            .await
            .expect("connect to the test cluster")
    }

    /// The node that leads JetStream stream `stream` (for a KV bucket, `KV_<bucket>`), as the
    /// stream's info reports it through `client`; `None` while it has no leader.
    pub async fn stream_leader(&self, client: &async_nats::Client, stream: &str) -> Option<usize> {
        let js = async_nats::jetstream::new(client.clone());
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.clone()?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// The running node a client named `connection` (its NATS connection name) is connected
    /// to, read from each node's `/connz`.
    pub fn node_of(&self, connection: &str) -> Option<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).find(|&i| {
            http_get_json(self.nodes[i].http, "/connz?limit=1024")
                .and_then(|c| c["connections"].as_array().cloned())
                .is_some_and(|conns| conns.iter().any(|c| c["name"] == connection))
        })
    }

    /// What node `i` wrote to its log in its current run (for failure messages).
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `GET path` on a loopback monitoring port, as JSON; `None` when the server is not there or
/// the answer is not JSON. A plain HTTP/1.0 request is all nats-server's monitor needs.
pub fn http_get_json(port: u16, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cluster_forms_replicates_and_survives_a_node() {
        let mut cluster = NatsCluster::start(3);
        let client = cluster.connect().await;
        let js = async_nats::jetstream::new(client.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("a three-replica stream");
        let leader = crate::eventually(Duration::from_secs(20), "a stream leader", || {
            cluster.stream_leader(&client, "R3")
        })
        .await;
        cluster.kill(leader);
        crate::eventually(Duration::from_secs(30), "a new stream leader", || async {
            cluster
                .stream_leader(&client, "R3")
                .await
                .filter(|&l| l != leader)
        })
        .await;
        cluster.restart(leader);
        assert!(cluster.is_up(leader));
    }
}
