//! `kv [--port P]`: serves the key-value store on 127.0.0.1 (port 0, the
//! default, picks a free one) and prints `listening on ADDR` on stdout once
//! bound. The node is named by `NODETRACE_NODE` (default `kv@localhost`).
//!
//! Its own log goes to stdout through `tracing_subscriber::fmt` at `info`
//! (or `RUST_LOG`), as any service's would; `nodetrace_agent::tracing_layer()`
//! sits next to it and asks `tracing` for nothing until a tracer does, so
//! that output stays what it is while `nodetrace log --level debug` runs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nodetrace_agent::node::{self, NodeConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// A key-value store over TCP, traceable by nodetrace through `tracing`.
#[derive(Debug, Parser)]
#[command(name = "kv", version)]
struct Cli {
    /// The port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    node::start(NodeConfig::from_env_or("kv@localhost"))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(fmt)
        .with(nodetrace_agent::tracing_layer())
        .init();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", cli.port))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    tracing::info!(%addr, node = node::name(), "serving");
    kv::conn::serve(listener, Arc::new(kv::store::Store::default()))
        .await
        .context("the listener failed")
}
