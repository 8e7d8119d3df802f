//! A node under broken and hostile peers, end to end with real processes:
//! a flood of control connections under a low descriptor limit leaves its
//! HTTP served, a fake node that stalls mid-frame fails `ps` within its
//! timeout, and a home open to others is refused with the fix.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Home, unique};

/// The control server's address of the node `name`, from `nodes`.
fn control_addr(home: &Home, name: &str) -> SocketAddr {
    let out = home.run(&["nodes", "--format", "json"]);
    let line = out
        .ok()
        .lines()
        .find(|l| l.contains(name))
        .expect("the node is listed")
        .to_owned();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    value["addr"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_flood_of_control_connections_leaves_the_nodes_http_served() {
    let home = Home::new();
    let node = home.start_node_with_fd_limit(&unique("flood"), 256);
    let addr = control_addr(&home, &node.name);
    // Far more than the cap: the node serves 64, closes the rest at once.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(flood.len() >= 64, "{} connections", flood.len());
    assert_eq!(node.add_entry("bob", "2023-12-19", "Movies"), "OK");
    assert!(node.entries("bob", "2023-12-19").contains("Movies"));
    drop(flood);
    // Once the flood is gone (the idle ones at the login deadline), the
    // node is traceable again.
    let start = Instant::now();
    loop {
        let run = home.run(&["ps", "--node", &node.name]);
        if run.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "ps still fails after the flood: {}",
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn ps_against_a_node_that_stalls_mid_frame_fails_within_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 64];
        let _ = s.read(&mut hello);
        // Two bytes of a frame's length, then nothing.
        s.write_all(&[0, 0]).unwrap();
        std::thread::sleep(Duration::from_secs(25));
    });
    let home = Home::new();
    let start = Instant::now();
    let run = home.run(&["ps", "--node", &addr.to_string()]);
    let took = start.elapsed();
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(run.stderr.contains("stalled"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    drop(fake);
}

#[cfg(unix)]
#[test]
fn a_home_open_to_others_is_refused_with_the_fix_on_both_sides() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let run = home.run(&["nodes"]);
    assert!(!run.status.success());
    let fix = format!("chmod 700 {}", home.path().display());
    assert!(
        run.stderr.contains("is writable by others (mode 1777)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&fix), "{}", run.stderr);
    let node = home.try_start_node(&unique("open"));
    assert!(node.contains(&fix), "{node}");
    let mode = std::fs::metadata(home.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the home is left as it was");
}
