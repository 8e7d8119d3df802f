//! The tracer's rendering: events as dbg-style text lines and as JSON lines
//! into a file, against writing the same number of ready-made lines.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodetrace_protocol::CallsiteInfo;
use nodetrace_tracer::Format;
use nodetrace_tracer::render::{NodeView, Renderer};

const LINES: u64 = 100_000;

fn render(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeView::new(
        "todo@localhost",
        [CallsiteInfo {
            id: 0,
            module: "todo::server".into(),
            function: "entries".into(),
            self_type: None,
            trait_name: None,
            arity: 2,
            file: "examples/todo/src/server.rs".into(),
            line: 49,
            is_async: true,
            ..CallsiteInfo::default()
        }],
    );
    let events = common::call_return_events(LINES, 12_400);
    let mut group = c.benchmark_group("render_to_file");
    group.throughput(Throughput::Elements(LINES));
    let line = "(<0.40.1>) call todo::server:entries(<0.9.0>, 2023-12-19)\n";
    group.bench_function("ready_made_lines", |b| {
        b.iter(|| {
            let mut out = BufWriter::new(File::create(dir.path().join("plain.txt")).unwrap());
            for _ in 0..LINES {
                out.write_all(black_box(line.as_bytes())).unwrap();
            }
            out.flush().unwrap();
        })
    });
    for format in [Format::Text, Format::Json] {
        let renderer = Renderer::new(format, false);
        group.bench_function(format!("{format}"), |b| {
            b.iter(|| {
                let mut out = BufWriter::new(File::create(dir.path().join("events")).unwrap());
                for event in &events {
                    renderer.event(&mut out, &node, event).unwrap();
                }
                out.flush().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
