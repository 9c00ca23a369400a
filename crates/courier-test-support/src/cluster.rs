//! Clusters of brokers on loopback, for chaos tests: nats-servers with
//! JetStream ([`NatsCluster`]) and RabbitMQ nodes ([`RabbitCluster`]), both
//! driven through [`Chaos`].
//!
//! [`NatsCluster::start`] runs three (or more) nats-server processes, each
//! a [`PrivateBroker`] of its own (a client port, a data directory, killed
//! on drop) with `-js`, a server name (`node-1`, …), a cluster port, the
//! cluster name and routes to the other nodes, and a monitoring port. It
//! returns once the nodes agree on a JetStream meta leader (read from each
//! node's `/jsz`), so that a stream can be created with replicas. A test
//! kills a node with SIGKILL ([`NatsCluster::kill`]) and starts it again on
//! the same ports and data ([`NatsCluster::restart`]), the way nats-server's
//! own JetStream chaos tests do. Clients connect with [`NatsCluster::url`],
//! which lists every node.
//!
//! [`RabbitCluster::start`] runs three RabbitMQ nodes, each a
//! [`PrivateBroker`] (its node name, AMQP and distribution ports, data
//! directory), started side by side and forming one cluster by classic
//! peer discovery (each node's rabbitmq.conf lists the three). Each node is
//! an Erlang VM of 125–135 MB resident; the three form a cluster in
//! 14–20 s.
//!
//! A test that runs one says so with `Need::Installed(Broker::Nats)` (or
//! `Broker::RabbitMq`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::brokers::Broker;
use crate::net::free_port;
use crate::private::PrivateBroker;
use crate::wait::eventually;

/// What a chaos test does to a cluster.
pub trait Chaos: Send + 'static {
    /// How many nodes the cluster has.
    fn size(&self) -> usize;
    /// The name of node `i`.
    fn node_name(&self, i: usize) -> String;
    /// Kills node `i` with SIGKILL; waits until it is gone.
    fn kill_node(&mut self, i: usize);
    /// Starts node `i` again on its ports and data.
    fn restart_node(&mut self, i: usize);
    /// How many clients are connected to node `i`, if it says.
    fn clients_of(&self, i: usize) -> Option<u64>;
    /// Waits until the cluster is whole and working again; panics after
    /// `timeout`.
    fn wait_whole(&self, timeout: Duration);
    /// Nodes killed so far.
    fn kills(&self) -> u32;
}

impl Chaos for NatsCluster {
    fn size(&self) -> usize {
        self.nodes.len()
    }
    fn node_name(&self, i: usize) -> String {
        self.name(i).to_string()
    }
    fn kill_node(&mut self, i: usize) {
        self.kill(i);
    }
    fn restart_node(&mut self, i: usize) {
        self.restart(i);
    }
    fn clients_of(&self, i: usize) -> Option<u64> {
        self.clients(i)
    }
    fn wait_whole(&self, timeout: Duration) {
        self.wait_ready(timeout);
    }
    fn kills(&self) -> u32 {
        self.kills
    }
}

/// The cluster name the nodes share.
const NAME: &str = "courier";

/// One node: its broker process and its ports.
struct Node {
    name: String,
    broker: PrivateBroker,
    monitor: u16,
}

/// A nats-server cluster with JetStream, every node on loopback.
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// Nodes killed so far.
    pub kills: u32,
}

impl NatsCluster {
    /// Starts `size` nodes and waits (up to 30 s) until they have a
    /// JetStream meta leader; panics when they do not.
    pub fn start(size: usize) -> Self {
        assert!(size >= 1, "a cluster of at least one node");
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let nodes = (0..size)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                let monitor = free_port();
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, port)| format!("nats://127.0.0.1:{port}"))
                    .collect();
                let args = vec![
                    "-n".into(),
                    name.clone(),
                    "-m".into(),
                    monitor.to_string(),
                    "--cluster_name".into(),
                    NAME.into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    others.join(","),
                ];
                Node {
                    name,
                    broker: PrivateBroker::start_nats_with(args),
                    monitor,
                }
            })
            .collect();
        let cluster = Self { nodes, kills: 0 };
        cluster.wait_ready(Duration::from_secs(30));
        cluster
    }

    /// The url listing every node (`nats://127.0.0.1:P1,nats://…`).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| Broker::Nats.url_at(n.broker.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `backend` and `url` lines of a `[clients.*]` table for the cluster.
    pub fn client(&self) -> String {
        format!("backend = \"nats\"\nurl = \"{}\"", self.url())
    }

    /// The server name of node `i` (`node-1` for 0).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].broker.running()
    }

    /// Kills node `i` with SIGKILL and waits until its process is gone.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].broker.kill();
        self.kills += 1;
    }

    /// Starts node `i` again on its ports and data, and waits until it
    /// accepts connections (it catches up with the others by itself).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].broker.restart();
    }

    /// The JetStream meta leader node `i` knows of, from its `/jsz`; `None`
    /// when it does not answer or knows of none.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let jsz = http_get_json(self.nodes[i].monitor, "/jsz")?;
        let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_string())
    }

    /// How many clients are connected to node `i`, from its `/connz`;
    /// `None` when it does not answer.
    pub fn clients(&self, i: usize) -> Option<u64> {
        http_get_json(self.nodes[i].monitor, "/connz")?
            .get("num_connections")?
            .as_u64()
    }

    /// The servers holding `stream`, by server name, once it has a leader:
    /// the first running node whose `/jsz` lists the stream (so holds a
    /// copy), with the peers it names (its leader and the replicas other
    /// than itself). `None` when no node lists it or it has no leader.
    pub fn stream_peers(&self, stream: &str) -> Option<Vec<String>> {
        (0..self.nodes.len())
            .filter(|i| self.running(*i))
            .find_map(|i| {
                let jsz = http_get_json(self.nodes[i].monitor, "/jsz?streams=true")?;
                let detail = jsz
                    .get("account_details")?
                    .as_array()?
                    .iter()
                    .filter_map(|a| a.get("stream_detail")?.as_array())
                    .flatten()
                    .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(stream))?;
                let cluster = detail.get("cluster")?;
                let leader = cluster.get("leader")?.as_str().filter(|l| !l.is_empty())?;
                let replicas = cluster
                    .get("replicas")
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("name")?.as_str());
                let peers: BTreeSet<String> = [self.nodes[i].name.as_str(), leader]
                    .into_iter()
                    .chain(replicas)
                    .map(str::to_string)
                    .collect();
                Some(peers.into_iter().collect())
            })
    }

    /// Whether every running node names the same meta leader, and that
    /// leader runs.
    pub fn ready(&self) -> bool {
        let mut leaders = (0..self.nodes.len())
            .filter(|i| self.running(*i))
            .map(|i| self.meta_leader(i));
        let Some(Some(first)) = leaders.next() else {
            return false;
        };
        let agreed = leaders.all(|l| l.as_deref() == Some(first.as_str()));
        agreed && (0..self.nodes.len()).any(|i| self.running(i) && self.nodes[i].name == first)
    }

    /// Waits until [`NatsCluster::ready`]; panics with the nodes' logs
    /// after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        if !eventually(timeout, || self.ready()) {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("--- {}:\n{}", n.name, n.broker.log()))
                .collect();
            panic!(
                "the NATS cluster elected no JetStream meta leader within {timeout:?}:\n{}",
                logs.join("\n")
            );
        }
    }

    /// The end of node `i`'s log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].broker.log()
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0), the body parsed as JSON;
/// `None` on any failure.
fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200");
    if !ok {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// A RabbitMQ cluster, every node on loopback.
pub struct RabbitCluster {
    nodes: Vec<PrivateBroker>,
    /// Nodes killed so far.
    pub kills: u32,
}

impl RabbitCluster {
    /// Starts `size` nodes side by side and waits (up to 90 s) until each
    /// sees all of them running.
    pub fn start(size: usize) -> Self {
        let mut nodes: Vec<PrivateBroker> =
            (0..size).map(|_| PrivateBroker::rabbitmq_node()).collect();
        let mut conf = String::from("cluster_formation.peer_discovery_backend = classic_config\n");
        for (i, n) in nodes.iter().enumerate() {
            conf.push_str(&format!(
                "cluster_formation.classic_config.nodes.{} = {}\n",
                i + 1,
                n.node()
            ));
        }
        std::thread::scope(|scope| {
            for node in &mut nodes {
                let conf = conf.clone();
                scope.spawn(move || node.start_with_conf(conf));
            }
        });
        let cluster = Self { nodes, kills: 0 };
        cluster.wait_whole(Duration::from_secs(90));
        cluster
    }

    /// The url listing every node (`amqp://…:P1/%2f,amqp://…`).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| Broker::RabbitMq.url_at(n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `backend` and `url` lines of a `[clients.*]` table for the cluster.
    pub fn client(&self) -> String {
        format!("backend = \"amqp\"\nurl = \"{}\"", self.url())
    }

    /// The nodes node `i` sees running, from `rabbitmqctl cluster_status`.
    pub fn running_nodes(&self, i: usize) -> Option<Vec<String>> {
        let out = self.nodes[i].rabbitmqctl_output(&["cluster_status", "--formatter", "json"])?;
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        let mut running: Vec<String> = status
            .get("running_nodes")?
            .as_array()?
            .iter()
            .filter_map(|n| Some(n.as_str()?.to_string()))
            .collect();
        running.sort();
        Some(running)
    }

    /// The queues as node `i` lists them: name, type and members.
    pub fn queues(&self, i: usize) -> Option<Vec<(String, String, Vec<String>)>> {
        let out = self.nodes[i].rabbitmqctl_output(&[
            "list_queues",
            "name",
            "type",
            "members",
            "--formatter",
            "json",
        ])?;
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        list.as_array()?
            .iter()
            .map(|q| {
                let mut members: Vec<String> = q
                    .get("members")
                    .and_then(|m| m.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|m| Some(m.as_str()?.to_string()))
                    .collect();
                members.sort();
                Some((
                    q.get("name")?.as_str()?.to_string(),
                    q.get("type")?.as_str()?.to_string(),
                    members,
                ))
            })
            .collect()
    }

    /// Every node's name, sorted.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.iter().map(|n| n.node().to_string()).collect();
        names.sort();
        names
    }

    /// Whether every node runs and sees all of them running.
    pub fn whole(&self) -> bool {
        let all = self.node_names();
        (0..self.nodes.len())
            .all(|i| self.nodes[i].running() && self.running_nodes(i).as_ref() == Some(&all))
    }
}

impl Chaos for RabbitCluster {
    fn size(&self) -> usize {
        self.nodes.len()
    }
    fn node_name(&self, i: usize) -> String {
        self.nodes[i].node().to_string()
    }
    fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
        self.kills += 1;
    }
    fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
    }
    /// Connections whose server port is node `i`'s AMQP port.
    fn clients_of(&self, i: usize) -> Option<u64> {
        let out = self.nodes[i].rabbitmqctl_output(&[
            "list_connections",
            "port",
            "--formatter",
            "json",
        ])?;
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        let port = u64::from(self.nodes[i].port());
        Some(
            list.as_array()?
                .iter()
                .filter(|c| c.get("port").and_then(|p| p.as_u64()) == Some(port))
                .count() as u64,
        )
    }
    fn wait_whole(&self, timeout: Duration) {
        if !eventually(timeout, || self.whole()) {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("--- {}:\n{}", n.node(), n.log()))
                .collect();
            panic!(
                "the RabbitMQ cluster was not whole within {timeout:?}:\n{}",
                logs.join("\n")
            );
        }
    }
    fn kills(&self) -> u32 {
        self.kills
    }
}
