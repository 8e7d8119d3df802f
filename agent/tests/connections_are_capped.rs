//! The control server serves at most `MAX_CONNECTIONS` connections at
//! once: one more is closed at once, and the idle ones go at the handshake
//! deadline, after which tracers are served again.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nodetrace_agent::node::{self, MAX_CONNECTIONS, NodeConfig};

/// Whether the node closes `s` within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn one_connection_over_the_cap_is_closed_at_once() {
    let home = tempfile::tempdir().unwrap();
    let addr = node::start(NodeConfig {
        cookie: Some("cap".into()),
        home: Some(home.path().into()),
        ..NodeConfig::new("cap@test")
    })
    .unwrap();
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Let the node accept them all.
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)),
        "connection {} was served",
        MAX_CONNECTIONS + 1
    );
    // The idle ones are dropped at the handshake deadline; then a new
    // connection is served again (it is not closed at once).
    let start = Instant::now();
    for mut s in idle {
        assert!(closed_within(&mut s, Duration::from_secs(8)));
    }
    assert!(start.elapsed() < Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(addr).unwrap();
    assert!(
        !closed_within(&mut again, Duration::from_secs(1)),
        "a connection under the cap was closed at once"
    );
}
