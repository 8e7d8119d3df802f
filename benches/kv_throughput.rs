//! A real service's request cost with the `tracing` bridge: the `kv`
//! example node (spans and events in its request path, its own `fmt` layer
//! at `info` writing to a sink) answering SET and GET over a loopback
//! socket, without the bridge, with it idle, and with one span traced at
//! `--rate 1000/1s`. One server at a time, each on its own thread with its
//! subscriber as that thread's default; the client is a blocking socket.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions, tracing_layer};
use nodetrace_protocol::{Limits, Rate};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A `kv` server on its own thread, serving until dropped.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(bridge: bool) -> Server {
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let app = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(EnvFilter::new("info"));
            let registry = tracing_subscriber::registry().with(app);
            let _default = if bridge {
                tracing::subscriber::set_default(registry.with(tracing_layer()))
            } else {
                tracing::subscriber::set_default(registry)
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let store = Arc::new(kv::store::Store::default());
                tokio::select! {
                    _ = kv::conn::serve(listener, store) => {}
                    _ = stopped => {}
                }
            });
        });
        Server {
            addr: rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One SET and one GET, each waiting for its reply.
fn round(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, line: &mut String, i: u64) {
    writeln!(stream, "SET key{} value{i}", i % 64).unwrap();
    line.clear();
    reader.read_line(line).unwrap();
    writeln!(stream, "GET key{}", i % 64).unwrap();
    line.clear();
    reader.read_line(line).unwrap();
}

fn throughput(c: &mut Criterion) {
    // With one live dispatcher, `tracing` rebuilds interest against the
    // calling thread's default only, and patterns are set from this thread,
    // whose default is none: a second dispatcher that wants nothing makes
    // it ask every live one (the server's included).
    let _wants_nothing = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let mut group = c.benchmark_group("kv_set_get");
    for variant in ["without_bridge", "bridge_idle", "bridge_one_span_rate_1000"] {
        let server = Server::start(variant != "without_bridge");
        let session = (variant == "bridge_one_span_rate_1000").then(|| {
            let session = Session::start(SessionOptions {
                limits: Limits {
                    max_events: None,
                    rate: Some(Rate {
                        events: 1000,
                        per_ms: 1000,
                    }),
                    duration_ms: None,
                },
                ..SessionOptions::default()
            })
            .unwrap();
            let pattern: Pattern = "kv::cmd:apply".parse().unwrap();
            session.trace_pattern(&pattern);
            let batches = session.batches();
            thread::spawn(move || while batches.recv().is_some() {});
            session
        });
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        let mut i = 0u64;
        group.bench_function(variant, |b| {
            b.iter(|| {
                i += 1;
                round(&mut stream, &mut reader, &mut line, i)
            })
        });
        if let Some(session) = &session {
            session.flush();
            assert!(
                session.delivered() > 0,
                "the traced span was not recorded: {:?}",
                session.counts()
            );
        }
        drop(session);
        drop(stream);
        drop(server);
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
