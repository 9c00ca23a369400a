//! Loopback ports: a free one to bind, and whether one accepts connections.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A free port on 127.0.0.1: free when asked, for a server the test starts
/// next to bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepting(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
