//! The exports: 1 M events (half calls with arguments, half returns with
//! values and durations, over 7 processes) written as a Perfetto trace and
//! as Chrome JSON into a file, against the text lines of the same events
//! in the same run (the anchor); and OTLP export of their 500,000 spans to
//! a receiver on loopback, from the first event to the last span answered.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodetrace_protocol::CallsiteInfo;
use nodetrace_tracer::Format;
use nodetrace_tracer::export::otlp::{OtlpConfig, OtlpExporter};
use nodetrace_tracer::export::{Timeline, timeline_sink};
use nodetrace_tracer::render::{NodeView, Renderer};

const EVENTS: u64 = 1_000_000;

fn view() -> NodeView {
    let mut view = NodeView::new(
        "todo@localhost",
        [CallsiteInfo {
            id: 0,
            module: "todo::server".into(),
            function: "entries".into(),
            arity: 2,
            file: "examples/todo/src/server.rs".into(),
            line: 49,
            is_async: true,
            ..CallsiteInfo::default()
        }],
    );
    view.set_os_pid(4242);
    view
}

/// The process's peak resident memory so far, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn files(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let view = view();
    let events = common::call_return_events(EVENTS, 1000);
    let mut group = c.benchmark_group("export_to_file");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("text (anchor)", |b| {
        let renderer = Renderer::new(Format::Text, false);
        b.iter(|| {
            let mut out = BufWriter::new(File::create(dir.path().join("events.txt")).unwrap());
            for e in &events {
                renderer.event(&mut out, &view, black_box(e)).unwrap();
            }
            out.flush().unwrap();
        })
    });
    for timeline in [Timeline::Perfetto, Timeline::Chrome] {
        group.bench_function(format!("{timeline}"), |b| {
            b.iter(|| {
                let mut out = BufWriter::new(File::create(dir.path().join("events")).unwrap());
                let mut sink = timeline_sink(timeline);
                for e in &events {
                    sink.event(&mut out, 0, &view, black_box(e)).unwrap();
                }
                sink.finish(&mut out).unwrap();
                out.flush().unwrap();
            })
        });
    }
    group.finish();
}

/// A receiver that reads each request and answers 200, on its own thread.
fn receiver() -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    thread::spawn(move || {
        let mut body = Vec::new();
        for mut request in server.incoming_requests() {
            body.clear();
            let _ = request.as_reader().read_to_end(&mut body);
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    url
}

fn otlp(c: &mut Criterion) {
    let view = view();
    let events = common::call_return_events(EVENTS, 1000);
    let config = OtlpConfig::resolve(Some(&receiver()), |_| None).unwrap();
    let mut group = c.benchmark_group("otlp_export");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS / 2));
    let before = peak_rss_kib();
    // Spans exported per second of each run, whatever was dropped.
    let mut exported_rates = Vec::new();
    let mut dropped_runs = 0;
    group.bench_function("spans_to_a_loopback_receiver", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut exporter = OtlpExporter::start(config.clone()).unwrap();
                for e in &events {
                    exporter.event(0, &view, black_box(e));
                }
                let counts = exporter.finish();
                let run = start.elapsed();
                took += run;
                assert_eq!(counts.spans, EVENTS / 2);
                assert_eq!(
                    counts.spans,
                    counts.exported + counts.dropped + counts.rejected
                );
                exported_rates.push(counts.exported as f64 / run.as_secs_f64());
                if counts.dropped > 0 {
                    dropped_runs += 1;
                    eprintln!(
                        "otlp: {} of {} spans dropped (queue full)",
                        counts.dropped, counts.spans
                    );
                }
            }
            took
        })
    });
    group.finish();
    exported_rates.sort_by(f64::total_cmp);
    if let (Some(low), Some(high)) = (exported_rates.first(), exported_rates.last()) {
        eprintln!(
            "otlp: spans exported per second over {} runs (warm-up included): {:.0}-{:.0} k, median {:.0} k; {} runs dropped spans",
            exported_rates.len(),
            low / 1e3,
            high / 1e3,
            exported_rates[exported_rates.len() / 2] / 1e3,
            dropped_runs
        );
    }
    eprintln!(
        "otlp: peak RSS {} KiB before the export bench, {} KiB after (the events themselves: about {} KiB)",
        before,
        peak_rss_kib(),
        EVENTS * 120 / 1024
    );
}

criterion_group!(benches, files, otlp);
criterion_main!(benches);
