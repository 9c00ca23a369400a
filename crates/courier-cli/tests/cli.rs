//! The `courier` command, run as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use courier_test_support::{accepting, free_port, wait_until};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");

/// Runs `courier ARGS` with `input` on stdin; kills it after 60 s.
fn courier(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(COURIER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn courier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("courier {args:?} did not finish in 60 s");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn stdin_lines_flow_through_uppercase_to_stdout() {
    let out = courier(
        &[
            "run",
            test_programs::UPPERCASE,
            "--stdin",
            "in",
            "--print",
            "out",
        ],
        "hello\nworld\n",
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\nWORLD\n");
}

#[test]
fn a_trapping_guest_does_not_stop_the_run() {
    let out = courier(
        &[
            "run",
            test_programs::FLAKY,
            "--stdin",
            "in",
            "--print",
            "out",
        ],
        "one\ntrap now\ntwo\n",
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("guest trapped"), "{stderr}");
    // The guest's own stderr (its panic message) is in the host log, tagged.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("flaky: trapping on trap now") && l.contains("guest=flaky")),
        "{stderr}"
    );
    assert!(stderr.contains("dropping message"), "{stderr}");
}

#[test]
fn check_accepts_a_guest_and_explains_what_is_not_one() {
    let out = courier(&["check", test_programs::UPPERCASE], "");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("wasi:messaging/producer@0.2.0-draft"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: exports wasi:messaging/guest@0.2.0-draft"),
        "{stdout}"
    );
    // What produced it, its size and the memory it starts with.
    assert!(stdout.contains("\nsize: "), "{stdout}");
    assert!(
        stdout.contains("processed-by: ") && stdout.contains("wit-bindgen-rust"),
        "{stdout}"
    );
    assert!(stdout.contains("\ninitial memory: "), "{stdout}");
    assert!(!stdout.contains("warning:"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("notes.txt", b"hello, I am text", "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "core WebAssembly module, not a component",
        ),
        (
            "broken.wasm",
            b"\0asm\x0d\0\x01\0\xff\xff",
            "not a valid component",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = courier(&["check", path.to_str().unwrap()], "");
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        let out = courier(&["run", path.to_str().unwrap()], "");
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(expected), "run {name}");
    }
    let out = courier(&["check", "/nonexistent/guest.wasm"], "");
    assert!(text(&out.stderr).contains("cannot read"));
}

/// A component with the right names but a `handler` of the wrong type, and
/// a guest whose memory limit is below what it needs: `check` (with the
/// config's limits) and `run` refuse them with the reason, and `run` takes
/// no message.
#[test]
fn check_and_run_refuse_a_guest_that_cannot_run() {
    let out = courier(&["check", test_programs::MISTYPED], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot run"), "{stderr}");
    let out = courier(&["run", test_programs::MISTYPED, "--stdin", "in"], "x\n");
    assert!(!out.status.success(), "run must fail, not drop messages");
    assert!(text(&out.stderr).contains("cannot run"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(&config, "[guests.uppercase]\nmemory-limit-mib = 1\n").unwrap();
    let config = config.to_str().unwrap();
    let out = courier(&["check", test_programs::UPPERCASE, "--config", config], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("memory-limit-mib = 1"), "{stderr}");
    // Said before trying: the memory the component starts with is over the limit.
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warning: the component starts with")
            && stdout.contains("more than memory-limit-mib = 1"),
        "{stdout}"
    );
    let out = courier(
        &[
            "run",
            test_programs::UPPERCASE,
            "-c",
            config,
            "--stdin",
            "in",
        ],
        "x\n",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot run"));
}

#[test]
fn check_and_run_explain_a_truncated_component() {
    let good = std::fs::read(test_programs::UPPERCASE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uppercase.wasm");
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let path = path.to_str().unwrap();
    for command in ["check", "run"] {
        let out = courier(&[command, path], "");
        assert!(!out.status.success(), "{command}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(path), "{command}: {stderr}");
        assert!(stderr.contains("truncated"), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}

#[test]
fn bad_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("courier.toml");
    std::fs::write(
        &path,
        "[guests.up]\nsubscribe = [\"in\"]\nmax-atempts = 3\n",
    )
    .unwrap();
    let out = courier(
        &[
            "run",
            test_programs::UPPERCASE,
            "--config",
            path.to_str().unwrap(),
        ],
        "",
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("max-atempts") && stderr.contains("line 3"),
        "{stderr}"
    );

    std::fs::write(&path, "[guests.up]\nclient = \"nats\"\n").unwrap();
    let out = courier(&["run", "--config", path.to_str().unwrap()], "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("guests.up.client") && stderr.contains("no client named `nats`"),
        "{stderr}"
    );
}

/// A running `courier run … --listen`, killed on drop.
struct Server(Child);

impl Server {
    /// Starts `command` (a `courier run` serving HTTP on `port`, its
    /// standard output piped) and waits until it serves; the lines it
    /// prints arrive on the receiver.
    fn start(mut command: Command, port: u16) -> (Self, mpsc::Receiver<String>) {
        let mut server = Server(command.stdout(Stdio::piped()).spawn().unwrap());
        let stdout = server.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        wait_until(Duration::from_secs(60), "the host serving HTTP", || {
            accepting(port) || server.0.try_wait().unwrap().is_some()
        });
        assert!(server.0.try_wait().unwrap().is_none(), "the host exited");
        (server, rx)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(request.as_bytes());
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    text(&response)
}

#[test]
fn http_ingress_metrics_and_health() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(COURIER);
    command
        .args(["run", test_programs::UPPERCASE, "--subscribe", "in"])
        .args(["--print", "out", "--listen", &addr])
        .stderr(Stdio::null());
    let (_server, rx) = Server::start(command, port);
    let health = http(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"status\":\"ok\""),
        "{health}"
    );

    let body = "via http";
    let response = http(
        &addr,
        &format!(
            "POST /v1/channels/in HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "VIA HTTP"
    );

    // Channels valid nowhere are refused with the reason, and nothing is
    // published: a wildcard, NUL, `/`, and a 5,000-byte name.
    let long = "x".repeat(5000);
    for channel in ["in.*", "a%00b", "a%2Fb", "a%01", long.as_str()] {
        let response = http(
            &addr,
            &format!(
                "POST /v1/channels/{channel} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            ),
        );
        assert!(
            response.starts_with("HTTP/1.1 400") && response.contains("invalid request"),
            "{channel}: {response}"
        );
    }
    let big = "x".repeat(2 << 20);
    let response = http(
        &addr,
        &format!(
            "POST /v1/channels/in HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    let metrics = http(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("courier_messages_delivered_total{guest=\"uppercase\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courier_messages_accepted_total{guest=\"uppercase\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_data_directory_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // The first host holds the data directory while it runs: it opens it
    // before it starts, and serves HTTP once started.
    let port = free_port();
    let first = Server(
        Command::new(COURIER)
            .args(["run", test_programs::UPPERCASE, "--subscribe", "in"])
            .args(["--data-dir", data])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn courier"),
    );
    wait_until(Duration::from_secs(60), "the first host started", || {
        accepting(port)
    });
    let second = courier(
        &[
            "run",
            test_programs::UPPERCASE,
            "--stdin",
            "in",
            "--data-dir",
            data,
        ],
        "x\n",
    );
    drop(first);
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert!(
        err.contains("host.data-dir") && err.contains(data) && err.contains("another courier"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// With ingress tokens, a request without a valid bearer token gets 401, one
/// outside its token's grant 403, and neither publishes anything; a good
/// one is accepted and delivered.
#[test]
fn the_ingress_lets_in_only_its_tokens() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [host]
            listen = "127.0.0.1:{port}"
            summary-secs = 0
            ingress-tokens.producer = {{ token-env = "COURIER_TEST_INGRESS_TOKEN", allow-publish = ["in"] }}
            [guests.uppercase]
            component = "{}"
            subscribe = ["in", "other"]
            allow-publish = ["out"]
            "#,
            test_programs::UPPERCASE
        ),
    )
    .unwrap();
    let token = "ingress-token-for-the-test-4f1c";
    let mut command = Command::new(COURIER);
    command
        .args(["run", "--config"])
        .arg(&config)
        .args(["--print", "out"])
        .env("COURIER_TEST_INGRESS_TOKEN", token)
        .stderr(Stdio::piped());
    let (mut server, rx) = Server::start(command, port);
    let addr = format!("127.0.0.1:{port}");
    let post = |channel: &str, auth: &str, body: &str| {
        http(
            &addr,
            &format!(
                "POST /v1/channels/{channel} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let refused = post("in", "", "no token");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        refused.to_lowercase().contains("www-authenticate: bearer"),
        "{refused}"
    );
    let refused = post(
        "in",
        &bearer("ingress-token-for-the-test-0000"),
        "bad token",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let refused = post("other", &bearer(token), "not granted");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let accepted = post("in", &bearer(token), "via token");
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "VIA TOKEN"
    );
    // Nothing refused was published: the only output is the accepted one.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!log.contains(token), "the token reached the log:\n{log}");
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files `cert.pem` and `key.pem` into `dir`; returns the certificate, for
/// a client to trust.
fn self_signed(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    certified.cert.der().clone()
}

/// Sends `request` over TLS to `addr`, trusting only `ca`, and reads the
/// response until the server closes the connection.
fn https(addr: &str, ca: &rustls::pki_types::CertificateDer<'static>, request: &str) -> String {
    let mut tls = tls_connect(addr, ca);
    tls.write_all(request.as_bytes()).unwrap();
    read_response(&mut tls)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` (as `localhost`), trusting only `ca`.
fn tls_connect(addr: &str, ca: &rustls::pki_types::CertificateDer<'static>) -> TlsStream {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// Reads a response until the server closes the connection.
fn read_response(tls: &mut TlsStream) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // A close without close_notify after the response is complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the HTTPS response: {e}"),
        }
    }
    text(&response)
}

/// Back-pressure on `--stdin`: standard input outruns a slow guest past
/// `max-queued-messages`; the run waits for room instead of ending, and
/// every line comes out.
#[test]
fn stdin_waits_for_room_in_a_full_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [host]
            max-queued-messages = 3
            [guests.upper]
            component = "{}"
            subscribe = ["in"]
            allow-publish = ["out"]
            env = {{ OUT = "out", DELAY_MS = "10" }}
            batch-size = 1
            concurrency = 1
            "#,
            test_programs::UPPERCASE
        ),
    )
    .unwrap();
    let lines: Vec<String> = (0..30).map(|i| format!("line {i:02}")).collect();
    let config = config.to_str().unwrap();
    let out = courier(
        &["run", "--config", config, "--stdin", "in", "--print", "out"],
        &(lines.join("\n") + "\n"),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let mut printed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    printed.sort();
    let expected: Vec<String> = lines.iter().map(|l| l.to_uppercase()).collect();
    assert_eq!(printed, expected);
}

/// Back-pressure: with `max-queued-messages = 3` and the guest busy on the
/// first message, the next two are accepted and the fourth gets `503` with
/// `Retry-After`, publishing nothing.
#[test]
fn a_full_ingress_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [host]
            max-queued-messages = 3
            [guests.probe]
            component = "{}"
            subscribe = ["cmd"]
            allow-publish = [">"]
            mode = "point-to-point"
            batch-size = 1
            concurrency = 1
            handler-timeout-ms = 30000
            "#,
            test_programs::PROBE
        ),
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(COURIER);
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--listen", &addr])
        .stderr(std::fs::File::create(dir.path().join("host.log")).unwrap());
    let (mut server, _rx) = Server::start(command, port);
    // When the host stops answering, say how it ended and what it logged.
    let mut post = |n: usize| match TcpStream::connect(&addr) {
        Ok(_) => http(&addr, &post_request("cmd", "", "loop")),
        Err(e) => panic!(
            "post {n}: {e}; the host: {:?}\n{}",
            server.0.try_wait(),
            std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default()
        ),
    };
    for n in 1..=3 {
        let response = post(n);
        assert!(response.starts_with("HTTP/1.1 202"), "{n}: {response}");
    }
    let response = post(4);
    assert!(
        response.starts_with("HTTP/1.1 503")
            && response.to_ascii_lowercase().contains("retry-after: 1")
            && response.contains("at most 3"),
        "{response}"
    );
}

/// A host on the in-memory embedded broker given 20 messages that take
/// 100 ms each (a loop cut by the handler deadline, then dead-lettered),
/// stopped by SIGTERM at once: with time to drain, every one is handled
/// before it exits and the log says so; with a 300 ms drain deadline it
/// exits with an error that counts what was lost — and the dead letters
/// printed plus those lost are the 20 it accepted.
#[test]
fn shutdown_drains_what_memory_holds_or_counts_what_it_loses() {
    for (drain_ms, expect_all) in [(30_000, true), (300, false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("courier.toml");
        std::fs::write(
            &config,
            format!(
                r#"
                [host]
                drain-timeout-ms = {drain_ms}
                summary-secs = 0
                [guests.probe]
                component = "{}"
                subscribe = ["cmd"]
                allow-publish = [">"]
                mode = "point-to-point"
                batch-size = 1
                concurrency = 1
                max-attempts = 1
                dead-letter = "dlq"
                handler-timeout-ms = 100
                "#,
                test_programs::PROBE
            ),
        )
        .unwrap();
        let log = dir.path().join("host.log");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(COURIER);
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &addr, "--print", "dlq"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap());
        let (mut server, rx) = Server::start(command, port);
        for n in 1..=20 {
            let response = http(&addr, &post_request("cmd", "", "loop"));
            assert!(response.starts_with("HTTP/1.1 202"), "{n}: {response}");
        }
        let pid = server.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = wait_for_exit(&mut server.0, Duration::from_secs(60));
        let printed: Vec<String> = rx.try_iter().collect();
        let text = std::fs::read_to_string(&log).unwrap();
        if expect_all {
            assert!(status.success(), "{status:?}\n{text}");
            assert_eq!(printed.len(), 20, "{text}");
            assert!(
                text.contains("every message accepted in memory was handled"),
                "{text}"
            );
        } else {
            assert!(
                !status.success(),
                "exited 0 though messages were lost\n{text}"
            );
            let lost: usize = text
                .lines()
                .find_map(|l| {
                    l.split(" accepted messages held in memory were not handled")
                        .next()
                        .filter(|_| l.contains("were not handled"))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no count of the lost messages:\n{text}"));
            assert!(lost > 0, "{text}");
            assert_eq!(printed.len() + lost, 20, "{printed:?}\n{text}");
        }
    }
}

/// Waits (bounded) for `child` to exit.
fn wait_for_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(limit, "the host to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// A `POST /v1/channels/{channel}` request with `headers` (each ending in
/// CRLF) and `body`.
fn post_request(channel: &str, headers: &str, body: &str) -> String {
    format!(
        "POST /v1/channels/{channel} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// Over HTTPS (a certificate made by the test): plain HTTP gets no HTTP
/// answer; no token 401, outside the grant 403, a good request 202 and
/// delivered; `Courier-Reply-To` and `Courier-Meta-*` headers reach the
/// guests; bad metadata gets 400 and publishes nothing; /readyz is 200 with
/// every client up; /metrics has both histograms, the latency one counting
/// the deliveries. A key that does not fit the certificate is refused.
#[test]
fn the_https_ingress_carries_headers_and_serves_health_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let ca = self_signed(dir.path());
    let port = free_port();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [host]
            listen = "127.0.0.1:{port}"
            summary-secs = 0
            tls-cert-file = "cert.pem"
            tls-key-file = "key.pem"
            ingress-tokens.producer = {{ token-env = "COURIER_TEST_INGRESS_TOKEN", allow-publish = ["in", "to-router"] }}
            [guests.uppercase]
            component = "{}"
            subscribe = ["in", "other"]
            allow-publish = ["out", "replies"]
            [guests.router]
            component = "{}"
            subscribe = ["to-router"]
            allow-publish = ["routed"]
            "#,
            test_programs::UPPERCASE,
            test_programs::ROUTER,
        ),
    )
    .unwrap();
    let token = "ingress-token-for-the-tls-test-77a0";
    let mut command = Command::new(COURIER);
    command
        .args(["run", "--config"])
        .arg(&config)
        .args(["--print", "replies", "--print", "routed"])
        .env("COURIER_TEST_INGRESS_TOKEN", token)
        .stderr(Stdio::null());
    let (_server, rx) = Server::start(command, port);
    let addr = format!("127.0.0.1:{port}");
    let next_line = || rx.recv_timeout(Duration::from_secs(20)).unwrap();

    let plain = http(&addr, &get_request("/healthz"));
    assert!(!plain.starts_with("HTTP/"), "plain HTTP answered: {plain}");

    let bearer = format!("Authorization: Bearer {token}\r\n");
    let refused = https(&addr, &ca, &post_request("in", "", "no token"));
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let refused = https(&addr, &ca, &post_request("other", &bearer, "not granted"));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // Only `replies` and `routed` are printed: the upper-cased message
    // arrives there because of its reply-to.
    let headers = format!("{bearer}Content-Type: text/plain\r\nCourier-Reply-To: replies\r\n");
    let accepted = https(&addr, &ca, &post_request("in", &headers, "via tls"));
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    assert_eq!(next_line(), "VIA TLS");
    // The router sends to the channel named by its `route` metadata.
    let headers = format!("{bearer}Courier-Meta-Route: routed\r\nCourier-Meta-Trace: t-1\r\n");
    let accepted = https(
        &addr,
        &ca,
        &post_request("to-router", &headers, "by metadata"),
    );
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    assert_eq!(next_line(), "by metadata");

    // Bad headers: 400 with the reason, nothing published (the next line
    // printed is the one sent after them).
    let bad = [
        ("Courier-Meta-Courier-Attempt: 1\r\n", "Courier's own"),
        ("Courier-Meta-Note: a\tb\r\n", "control character"),
        ("Courier-Reply-To: replies.*\r\n", "not a channel"),
        ("Courier-Replyto: replies\r\n", "unknown header"),
    ];
    for (header, reason) in bad {
        let headers = format!("{bearer}Courier-Meta-Route: routed\r\n{header}");
        let response = https(&addr, &ca, &post_request("to-router", &headers, "refused"));
        assert!(
            response.starts_with("HTTP/1.1 400") && response.contains(reason),
            "{header:?}: {response}"
        );
    }
    let headers = format!("{bearer}Courier-Meta-Route: routed\r\n");
    let accepted = https(
        &addr,
        &ca,
        &post_request("to-router", &headers, "after the refusals"),
    );
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    assert_eq!(next_line(), "after the refusals");

    let ready = https(&addr, &ca, &get_request("/readyz"));
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains(r#""status":"ready""#),
        "{ready}"
    );
    let health = https(&addr, &ca, &get_request("/healthz"));
    assert!(
        health.starts_with("HTTP/1.1 200")
            && health.contains(r#"{"name":"router","status":"running"}"#),
        "{health}"
    );
    let metrics = https(&addr, &ca, &get_request("/metrics"));
    for line in [
        "# TYPE courier_handler_duration_seconds histogram",
        "# TYPE courier_delivery_latency_seconds histogram",
        "# HELP courier_delivery_latency_seconds",
        "# TYPE courier_messages_delivered_total counter",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    let count = |name: &str| -> u64 {
        let prefix = format!("{name}_count{{guest=\"uppercase\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{metrics}"))
    };
    assert_eq!(count("courier_handler_duration_seconds"), 1, "{metrics}");
    assert_eq!(count("courier_delivery_latency_seconds"), 1, "{metrics}");

    // A key that is not the certificate's is refused before anything runs.
    let other = tempfile::tempdir().unwrap();
    self_signed(other.path());
    let mismatch = dir.path().join("mismatch.toml");
    std::fs::write(
        &mismatch,
        format!(
            "[host]\nlisten = \"127.0.0.1:{}\"\ntls-cert-file = \"cert.pem\"\n\
             tls-key-file = \"{}\"\n[guests.uppercase]\ncomponent = \"{}\"\n",
            free_port(),
            other.path().join("key.pem").display(),
            test_programs::UPPERCASE
        ),
    )
    .unwrap();
    let out = courier(&["run", "--config", mismatch.to_str().unwrap()], "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("host.tls-key-file") && stderr.contains("does not fit"),
        "{stderr}"
    );
}

/// /readyz is 503 and names a client whose broker cannot be reached (a NATS
/// client pointed at a closed port), while /healthz stays 200: the host is
/// alive and its guest runs.
#[cfg(feature = "nats")]
#[test]
fn readyz_names_a_client_whose_broker_is_unreachable() {
    let port = free_port();
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [host]
            listen = "127.0.0.1:{port}"
            summary-secs = 0
            [clients.default]
            backend = "embedded"
            [clients.events]
            backend = "nats"
            url = "nats://127.0.0.1:{closed}"
            [guests.uppercase]
            component = "{}"
            subscribe = ["in"]
            allow-publish = ["out"]
            "#,
            test_programs::UPPERCASE
        ),
    )
    .unwrap();
    let mut command = Command::new(COURIER);
    command
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null());
    let (_server, _rx) = Server::start(command, port);
    let addr = format!("127.0.0.1:{port}");
    let ready = http(&addr, &get_request("/readyz"));
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        ready.contains(r#""not-ready":["client events: "#)
            && ready.contains(r#"{"name":"default","backend":"embedded","status":"connected"}"#)
            && ready.contains(r#"{"name":"uppercase","status":"running"}"#),
        "{ready}"
    );
    let health = http(&addr, &get_request("/healthz"));
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""status":"ok""#),
        "{health}"
    );
}

/// Shutting down over HTTPS: the listener stops accepting at once, and a
/// request under way (its body half sent) still gets its answer before the
/// host exits, successfully.
#[test]
fn https_shutdown_stops_accepting_and_finishes_the_request_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let ca = self_signed(dir.path());
    let port = free_port();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nlisten = \"127.0.0.1:{port}\"\nsummary-secs = 0\n\
             tls-cert-file = \"cert.pem\"\ntls-key-file = \"key.pem\"\n\
             [guests.uppercase]\ncomponent = \"{}\"\nsubscribe = [\"in\"]\n\
             allow-publish = [\"out\"]\n",
            test_programs::UPPERCASE
        ),
    )
    .unwrap();
    let mut command = Command::new(COURIER);
    command
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped());
    let (mut server, _rx) = Server::start(command, port);
    let (log_tx, log) = mpsc::channel();
    let stderr = server.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let until = |what: &str| loop {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no `{what}` in the host's log"));
        if line.contains(what) {
            break line;
        }
    };
    let listening = until("listening on");
    assert!(
        listening.contains(&format!("listening on https://127.0.0.1:{port}")),
        "{listening}"
    );

    let addr = format!("127.0.0.1:{port}");
    let mut under_way = tls_connect(&addr, &ca);
    let body = "half and half";
    let request = post_request("in", "", body);
    let (first, rest) = request.split_at(request.len() - body.len() / 2);
    under_way.write_all(first.as_bytes()).unwrap();
    under_way.flush().unwrap();
    // Its connection was handed to the server first (its handshake is
    // done), and its task reads what is buffered as soon as it runs: by the
    // time a request on a later connection is answered, this one is under
    // way.
    let health = https(&addr, &ca, &get_request("/healthz"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    until("shutting down");
    wait_until(Duration::from_secs(10), "the listener closed", || {
        !accepting(port)
    });
    under_way.write_all(rest.as_bytes()).unwrap();
    let response = read_response(&mut under_way);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(server.0.wait().map(|s| s.success()));
        drop(server);
    });
    assert!(
        done.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(),
        "the host did not exit successfully"
    );
}
