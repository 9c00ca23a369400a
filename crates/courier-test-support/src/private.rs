//! Private broker processes for fault-injection tests.
//!
//! Each [`PrivateBroker`] is a broker of its own — nats-server with
//! JetStream, redis-server with an fsync'ed append-only file, mosquitto with
//! persistence, or a RabbitMQ node — on a free loopback port, keeping its
//! data in a temporary directory, so a test can kill and restart it without
//! disturbing the shared brokers other tests use. The process is killed when
//! the guard is dropped, also when the test panics.
//!
//! A test that runs one says so with [`Need::Installed`](crate::Need), so a
//! missing program ignores it (and fails it when `CI=true`).
//! `COURIER_NATS_SERVER`, `COURIER_REDIS_SERVER`, `COURIER_MOSQUITTO`,
//! `COURIER_RABBITMQ_SERVER` and `COURIER_RABBITMQCTL` override where the
//! programs are found.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::brokers::{Broker, find_program};
use crate::certs::Certs;
use crate::net::{accepting, free_port};
use crate::wait::eventually;

/// How long a start may take before the test fails.
fn boot_time(kind: Broker) -> Duration {
    match kind {
        Broker::RabbitMq => Duration::from_secs(60),
        _ => Duration::from_secs(15),
    }
}

static NODES: AtomicU32 = AtomicU32::new(0);

/// One private broker process, restartable on the same port and data.
pub struct PrivateBroker {
    kind: Broker,
    program: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    node: String,
    child: Option<Child>,
    /// The only user the broker lets in, when it requires one.
    auth: Option<(String, String)>,
    /// Its certificates, when it listens with TLS only.
    tls: Option<Certs>,
    /// A nats-server configuration file to start with.
    nats_conf: Option<PathBuf>,
    /// More nats-server arguments (a cluster node's).
    nats_args: Vec<String>,
    /// More lines of rabbitmq.conf (a cluster node's).
    rabbit_conf: String,
    /// Times the broker was stopped or killed while running.
    pub faults: u32,
}

impl PrivateBroker {
    /// Starts a private broker of `kind` and waits until it accepts
    /// connections. Panics when its program is missing (a test declares
    /// [`Need::Installed`](crate::Need) to be ignored instead) or it does
    /// not start.
    pub fn start(kind: Broker) -> Self {
        Self::start_as(kind, None)
    }

    /// Like [`PrivateBroker::start`], but the broker lets in only `user`
    /// with `password` (NATS, Redis and Mosquitto; a Redis ACL user, with
    /// the default user switched off).
    pub fn start_authenticated(kind: Broker, user: &str, password: &str) -> Self {
        assert!(
            kind != Broker::RabbitMq,
            "the shared RabbitMQ already requires a user"
        );
        Self::start_as(kind, Some((user.to_string(), password.to_string())))
    }

    /// A broker that speaks TLS only, with a server certificate for
    /// `localhost` and `127.0.0.1` signed by [`PrivateBroker::certs`]' own
    /// authority, and lets in `user` with `password` (on RabbitMQ, a user
    /// added with `rabbitmqctl`, beside `guest`). NATS also requires a
    /// client certificate (mutual TLS) signed by that authority.
    pub fn start_tls(kind: Broker, user: &str, password: &str) -> Self {
        let auth = Some((user.to_string(), password.to_string()));
        Self::start_with(kind, auth, Some(Certs::generate()))
    }

    /// The certificates of a broker started with [`PrivateBroker::start_tls`].
    pub fn certs(&self) -> &Certs {
        self.tls.as_ref().expect("a broker started with TLS")
    }

    /// The broker's url with `user:password@`, as a client configuration
    /// would give it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        self.kind
            .url_at(self.port)
            .replacen("guest:guest@", "", 1)
            .replacen("://", &format!("://{user}:{password}@"), 1)
    }

    /// A nats-server that lets in only the holder of the NKey whose public
    /// key (`U…`) is `public`.
    pub fn start_nkey(public: &str) -> Self {
        let mut broker = Self::new(Broker::Nats, None, None);
        let conf = broker.dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!("authorization {{ users = [ {{ nkey: \"{public}\" }} ] }}\n"),
        )
        .expect("nats.conf");
        broker.nats_conf = Some(conf);
        broker.boot()
    }

    /// A nats-server with JetStream started with `args` added to its
    /// command line (the cluster options of a [`NatsCluster`](crate::cluster::NatsCluster) node).
    pub(crate) fn start_nats_with(args: Vec<String>) -> Self {
        let mut broker = Self::new(Broker::Nats, None, None);
        broker.nats_args = args;
        broker.boot()
    }

    /// A RabbitMQ node, not started yet: [`PrivateBroker::node`] names it
    /// before it runs, and [`PrivateBroker::start_with_conf`] starts it.
    pub(crate) fn rabbitmq_node() -> Self {
        Self::new(Broker::RabbitMq, None, None)
    }

    /// The Erlang node name of a RabbitMQ broker (`name@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts a broker made by [`PrivateBroker::rabbitmq_node`] with `conf`
    /// added to its rabbitmq.conf, and waits until it accepts connections.
    pub(crate) fn start_with_conf(&mut self, conf: String) {
        self.rabbit_conf = conf;
        self.prepare();
        self.launch();
    }

    /// Runs `rabbitmqctl` with `args` on this node; its standard output,
    /// or `None` when it fails.
    pub fn rabbitmqctl_output(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(rabbitmqctl())
            .args(["-n", &self.node])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`PrivateBroker::url_as`], with the backend's TLS scheme
    /// (`tls://`, `rediss://`, `amqps://`, `mqtts://`).
    pub fn tls_url_as(&self, user: &str, password: &str) -> String {
        let url = self.url_as(user, password);
        let (scheme, rest) = url.split_once("://").expect("a url");
        let tls = match scheme {
            "nats" => "tls",
            "redis" => "rediss",
            "amqp" => "amqps",
            "mqtt" => "mqtts",
            other => panic!("no TLS scheme for {other}"),
        };
        format!("{tls}://{rest}")
    }

    fn start_as(kind: Broker, auth: Option<(String, String)>) -> Self {
        Self::start_with(kind, auth, None)
    }

    fn start_with(kind: Broker, auth: Option<(String, String)>, tls: Option<Certs>) -> Self {
        Self::new(kind, auth, tls).boot()
    }

    /// A broker of `kind`, not started yet.
    fn new(kind: Broker, auth: Option<(String, String)>, tls: Option<Certs>) -> Self {
        let program = kind.program().unwrap_or_else(|why| panic!("{why}"));
        let dir = tempfile::Builder::new()
            .prefix("courier-faults-")
            .tempdir()
            .expect("tempdir");
        let node = format!(
            "courier-faults-{}-{}@localhost",
            std::process::id(),
            NODES.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            kind,
            program,
            port: free_port(),
            dir,
            node,
            child: None,
            auth,
            tls,
            nats_conf: None,
            nats_args: Vec::new(),
            rabbit_conf: String::new(),
            faults: 0,
        }
    }

    /// Writes its configuration, starts it, and adds its user where that
    /// takes a command (RabbitMQ).
    fn boot(mut self) -> Self {
        self.prepare();
        self.launch();
        if self.kind == Broker::RabbitMq
            && let Some((user, password)) = self.auth.clone()
        {
            self.rabbitmqctl(&["add_user", &user, &password]);
            self.rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
        }
        self
    }

    /// Runs `rabbitmqctl` on this broker's node; panics when it fails.
    fn rabbitmqctl(&self, args: &[&str]) {
        let out = Command::new(rabbitmqctl())
            .args(["-n", &self.node])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The kind of broker.
    pub fn kind(&self) -> Broker {
        self.kind
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `backend` and `url` lines of a `[clients.*]` table for this broker.
    pub fn client(&self) -> String {
        self.kind.client_at(self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes configuration files once.
    fn prepare(&self) {
        let data = self.data();
        std::fs::create_dir_all(&data).expect("data dir");
        match self.kind {
            Broker::Mosquitto => {
                let mut conf = format!(
                    "listener {} 127.0.0.1\nallow_anonymous {}\npersistence true\n\
                     persistence_location {}/\nmax_queued_messages 100000\n\
                     max_inflight_messages 100\nlog_dest stderr\n\
                     # Started as root, mosquitto drops to the `mosquitto` user, which\n\
                     # cannot write this directory: it would lose every session on restart.\n\
                     user root\n",
                    self.port,
                    self.auth.is_none(),
                    data.display()
                );
                if let Some((user, password)) = &self.auth {
                    let file = self.dir.path().join("passwords");
                    let made = Command::new("mosquitto_passwd")
                        .arg("-b")
                        .arg("-c")
                        .arg(&file)
                        .args([user, password])
                        .status()
                        .expect("mosquitto_passwd");
                    assert!(made.success(), "mosquitto_passwd failed");
                    conf.push_str(&format!("password_file {}\n", file.display()));
                }
                if let Some(certs) = &self.tls {
                    conf.push_str(&format!(
                        "cafile {}\ncertfile {}\nkeyfile {}\n",
                        certs.ca().display(),
                        certs.server_cert().display(),
                        certs.server_key().display()
                    ));
                }
                std::fs::write(self.dir.path().join("mosquitto.conf"), conf).expect("conf");
            }
            Broker::RabbitMq => {
                let conf = match &self.tls {
                    None => format!(
                        "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
                        self.port
                    ),
                    Some(certs) => format!(
                        "listeners.tcp = none\nlisteners.ssl.local = 127.0.0.1:{}\n\
                         loopback_users = none\nssl_options.cacertfile = {}\n\
                         ssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                         ssl_options.verify = verify_none\n\
                         ssl_options.fail_if_no_peer_cert = false\n",
                        self.port,
                        certs.ca().display(),
                        certs.server_cert().display(),
                        certs.server_key().display()
                    ),
                };
                let conf = format!("{conf}{}", self.rabbit_conf);
                std::fs::write(self.dir.path().join("rabbitmq.conf"), conf).expect("conf");
                std::fs::write(self.dir.path().join("enabled_plugins"), "[].\n").expect("plugins");
                // The packaged wrapper runs the node as the `rabbitmq` user.
                for p in [self.dir.path(), &data] {
                    let _ = Command::new("chmod").arg("-R").arg("a+rwX").arg(p).status();
                }
            }
            Broker::Nats | Broker::Redis | Broker::Kafka => {}
        }
    }

    fn command(&self) -> Command {
        let dir = self.dir.path();
        let data = self.data();
        let mut cmd = Command::new(&self.program);
        match self.kind {
            Broker::Nats => {
                cmd.args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&data);
                if let Some((user, password)) = &self.auth {
                    cmd.args(["--user", user, "--pass", password]);
                }
                cmd.args(&self.nats_args);
                if let Some(conf) = &self.nats_conf {
                    cmd.arg("-c").arg(conf);
                }
                if let Some(certs) = &self.tls {
                    cmd.arg("--tlsverify")
                        .arg("--tlscert")
                        .arg(certs.server_cert())
                        .arg("--tlskey")
                        .arg(certs.server_key())
                        .arg("--tlscacert")
                        .arg(certs.ca());
                }
            }
            Broker::Redis => {
                let port = self.port.to_string();
                let (plain, tls) = match &self.tls {
                    Some(_) => ("0", port.as_str()),
                    None => (port.as_str(), "0"),
                };
                if let Some(certs) = &self.tls {
                    cmd.args(["--tls-port", tls, "--tls-auth-clients", "no"])
                        .arg("--tls-cert-file")
                        .arg(certs.server_cert())
                        .arg("--tls-key-file")
                        .arg(certs.server_key())
                        .arg("--tls-ca-cert-file")
                        .arg(certs.ca());
                }
                cmd.args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    plain,
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--dir",
                ])
                .arg(&data);
                if let Some((user, password)) = &self.auth {
                    cmd.args(["--user", "default", "off", "--user", user, "on"])
                        .arg(format!(">{password}"))
                        .args(["~*", "&*", "+@all"]);
                }
            }
            Broker::Mosquitto => {
                cmd.arg("-c").arg(dir.join("mosquitto.conf"));
            }
            Broker::Kafka => {
                // In memory: tansu's durable engines need a database or S3.
                let at = format!("tcp://127.0.0.1:{}", self.port);
                cmd.args(["broker", "--storage-engine", "memory://tansu/"])
                    .args(["--listener-url", &at, "--advertised-listener-url", &at]);
            }
            Broker::RabbitMq => {
                let dist = free_port();
                cmd.env("RABBITMQ_NODENAME", &self.node)
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_NODE_PORT", self.port.to_string())
                    .env("RABBITMQ_DIST_PORT", dist.to_string())
                    .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .env("RABBITMQ_MNESIA_BASE", data.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", data.join("log"));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .expect("broker log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        cmd
    }

    /// Starts the process and waits until it accepts connections.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = self.command().spawn().expect("spawn broker");
        self.child = Some(child);
        let mut exited = None;
        let up = eventually(boot_time(self.kind), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            accepting(self.port)
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "{:?} exited at start ({status}); log:\n{}",
                self.kind,
                self.log()
            );
        }
        assert!(
            up,
            "{:?} did not listen on {} within {:?}; log:\n{}",
            self.kind,
            self.port,
            boot_time(self.kind),
            self.log()
        );
    }

    /// Whether the broker's process runs (it was not killed or stopped
    /// since it was last started).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the broker accepts connections.
    pub fn listening(&self) -> bool {
        accepting(self.port)
    }

    /// The end of the broker's log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.floor_char_boundary(start)..].to_string()
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// Kills the broker at once (SIGKILL): no shutdown, no final save.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.faults += 1;
    }

    /// Stops the broker the way a service manager does (SIGTERM, or
    /// `rabbitmqctl stop` for RabbitMQ), waiting until it has exited.
    pub fn stop(&mut self) {
        if self.kind == Broker::RabbitMq {
            let stopped = Command::new(rabbitmqctl())
                .args(["-n", &self.node, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(stopped, Ok(s) if s.success()) {
                eprintln!("rabbitmqctl stop failed ({stopped:?}); killing the node");
            }
        }
        self.signal("TERM");
        self.faults += 1;
    }

    /// Sends `signal` to the broker's processes and waits (bounded) until the
    /// port is closed and the process is gone; escalates to SIGKILL.
    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.send(signal, child.id());
        let gone = eventually(Duration::from_secs(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
                && self.node_pids().is_empty()
                && !accepting(self.port)
        });
        if !gone {
            self.send("KILL", child.id());
            let _ = child.wait();
        }
    }

    /// Signals the process group of `pid` and, for RabbitMQ, the node's
    /// processes (the packaged wrapper starts them in a session of their own).
    fn send(&self, signal: &str, pid: u32) {
        let mut targets = vec![format!("-{pid}")];
        targets.extend(self.node_pids().into_iter().map(|p| p.to_string()));
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .args(&targets)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Processes started for this test's RabbitMQ node: the node name, unique
    /// to this process and broker, is in their environment.
    fn node_pids(&self) -> Vec<u32> {
        if self.kind != Broker::RabbitMq {
            return Vec::new();
        }
        let needle = format!("RABBITMQ_NODENAME={}", self.node);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

/// The `rabbitmqctl` program (`COURIER_RABBITMQCTL` overrides it).
fn rabbitmqctl() -> PathBuf {
    let ctl = std::env::var("COURIER_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    find_program(&ctl).unwrap_or_else(|| PathBuf::from(ctl))
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            self.send("KILL", child.id());
            let mut child = child;
            let _ = child.wait();
        }
        // A node left by a failed stop.
        for pid in self.node_pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
