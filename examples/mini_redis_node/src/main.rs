//! mini-redis, as its authors wrote it, made a nodetrace node by the two
//! lines of the bridge: `node::start` and `tracing_layer()` next to the
//! app's own `fmt` layer at `info`.
//!
//! `mini-redis-node` serves on an ephemeral port (printed); `mini-redis-node
//! drive ADDR N` is a client that runs N rounds of SET, GET and a missing
//! GET with mini-redis's own client.

use nodetrace_agent::node::{self, NodeConfig};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [drive, addr, rounds] = &args[..]
        && drive == "drive"
    {
        let mut client = mini_redis::client::connect(addr.as_str()).await?;
        for i in 0..rounds.parse::<u64>()? {
            let key = format!("key{}", i % 10);
            client.set(&key, format!("value{i}").into()).await?;
            client.get(&key).await?;
            client.get("missing").await?;
        }
        return Ok(());
    }
    node::start(NodeConfig::from_env_or("mini-redis@localhost"))?;
    tracing_subscriber::registry()
        .with(fmt::layer().with_filter(EnvFilter::new("info")))
        .with(nodetrace_agent::tracing_layer())
        .init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    mini_redis::server::run(listener, tokio::signal::ctrl_c()).await?;
    Ok(())
}
