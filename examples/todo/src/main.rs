//! `todo`: the Todo system as a node, serving HTTP or running a load.
//!
//! `todo [--name NAME] [--port P] [--data-dir DIR]` serves HTTP and prints
//! one line, `todo@localhost listening on http://127.0.0.1:5454`, once it
//! accepts connections. `todo load --requests N` runs N operations in
//! process and prints their throughput.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nodetrace_agent::node::{self, NodeConfig};
use todo::http::{self, DEFAULT_PORT};
use todo::load::{self, LoadConfig};

/// The Todo system of "Elixir in Action" as a nodetrace node.
#[derive(Debug, Parser)]
#[command(name = "todo", version)]
struct Cli {
    /// The node's name, by which tracers find it [default: todo@localhost,
    /// or todo_load_<os pid>@localhost for `load`].
    #[arg(long, global = true, env = "NODETRACE_NODE")]
    name: Option<String>,

    /// The HTTP port on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "TODO_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,

    /// Where the lists are stored, one file per list.
    #[arg(long, default_value = "./persist")]
    data_dir: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs operations against the system in process, without HTTP, and
    /// prints the throughput.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Operations in all, half add_entry and half entries.
    #[arg(long)]
    requests: u64,

    /// Lists the operations go to (list0, list1, ...).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    lists: u64,

    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,

    /// Store the lists as files here; without it they stay in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("todo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let name = cli.name.clone().unwrap_or_else(|| match cli.command {
        None => "todo@localhost".to_owned(),
        Some(Command::Load(_)) => format!("todo_load_{}@localhost", std::process::id()),
    });
    node::start(NodeConfig::new(name))?;
    match cli.command {
        None => serve(cli.port, cli.data_dir).await,
        Some(Command::Load(args)) => run_load(args).await,
    }
}

async fn serve(port: u16, data_dir: PathBuf) -> anyhow::Result<()> {
    let listener = http::bind(port).await?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let system = todo::start(Some(data_dir)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} listening on http://{addr}", node::name())?;
    out.flush()?;
    drop(out);
    http::serve(listener, system)
        .await
        .context("the HTTP server stopped")
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let system = todo::start(args.data_dir).await?;
    let config = LoadConfig {
        requests: args.requests,
        lists: args.lists,
        clients: args.clients,
    };
    let report = load::run(&system, config).await?;
    system.stop().await;
    println!("{report}");
    Ok(())
}
