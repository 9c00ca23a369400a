//! A fault-injecting TCP proxy between Courier and a broker, for network
//! fault tests: it forwards bytes both ways, and on command stalls them (a
//! black hole: connections stay open, nothing passes), delays them, or
//! resets every connection mid-stream (RST, as a crashed middlebox does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward them.
    Pass,
    /// Hold them: nothing passes, connections stay open.
    Stall,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

/// A running proxy; stops (closing its connections) when dropped.
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::reset`]: every connection of an older generation
    /// is reset.
    generation: watch::Sender<u64>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, _) = watch::channel(Mode::Pass);
        let (generation, _) = watch::channel(0u64);
        let mut tasks = JoinSet::new();
        let target = SocketAddr::from(([127, 0, 0, 1], target));
        let (modes, generations) = (mode.clone(), generation.clone());
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(upstream) = TcpStream::connect(target).await else {
                    continue;
                };
                let born = *generations.borrow();
                connections.spawn(relay(
                    client,
                    upstream,
                    modes.subscribe(),
                    generations.subscribe(),
                    born,
                ));
                // Reap finished connections as we go.
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            mode,
            generation,
            tasks,
        }
    }

    /// The port to give Courier instead of the broker's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwards bytes again (what a stall held goes through first).
    pub fn pass(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// Holds every byte, both ways, on every connection: a black hole.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Delays every chunk by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.mode.send_replace(Mode::Delay(delay));
    }

    /// Resets every open connection now (RST to both sides, whatever was
    /// in flight); new connections are accepted as before.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Forwards both ways until either side closes or a reset comes.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    mode: watch::Receiver<Mode>,
    mut generation: watch::Receiver<u64>,
    born: u64,
) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let client = Arc::new(client);
    let upstream = Arc::new(upstream);
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(client.clone(), upstream.clone(), mode.clone()));
    pumps.spawn(pump(upstream.clone(), client.clone(), mode));
    tokio::select! {
        _ = pumps.join_next() => {}
        _ = generation.wait_for(|g| *g != born) => {
            pumps.abort_all();
            // Linger 0: closing sends RST instead of FIN.
            for stream in [&client, &upstream] {
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
            }
        }
    }
    pumps.abort_all();
    while pumps.join_next().await.is_some() {}
}

/// Copies `from` to `to`, as the mode says.
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read(&from, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = match mode.wait_for(|m| *m != Mode::Stall).await {
            Ok(m) => *m,
            Err(_) => return,
        };
        if let Mode::Delay(d) = now {
            tokio::time::sleep(d).await;
        }
        if write(&to, &buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn read(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
