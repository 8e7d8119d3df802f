//! `orders [--port P] [--audit-delay D]`: serves the order book on
//! 127.0.0.1 (port 0, the default, picks a free one) and prints `listening
//! on ADDR` once bound. The node is named by `NODETRACE_NODE` (default
//! `orders@localhost`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nodetrace_agent::node::{self, NodeConfig};

/// An order book over TCP, written as tokio services are.
#[derive(Debug, Parser)]
#[command(name = "orders", version)]
struct Cli {
    /// The port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Time the audit actor takes per record, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    audit_delay: u64,
    /// Time between sweeps of the book, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    expiry_every: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("orders: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    node::start(NodeConfig::from_env_or("orders@localhost"))?;
    let services = orders::start(
        Duration::from_millis(cli.audit_delay),
        Duration::from_millis(cli.expiry_every.max(1)),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", cli.port))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    orders::conn::serve(listener, services)
        .await
        .context("the listener failed")
}
