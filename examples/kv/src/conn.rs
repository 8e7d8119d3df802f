//! Connections: one task and one span per client, reading commands a line
//! at a time until the client closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::instrument;

use crate::cmd::{self, Command, Reply};
use crate::store::Store;

/// Accepts clients for ever, each in its own task.
pub async fn serve(listener: TcpListener, store: Arc<Store>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, peer, store).await {
                tracing::warn!(%peer, %err, "connection failed");
            }
        });
    }
}

/// Serves one client: its span lasts as long as the connection.
#[instrument(skip(stream, store), fields(peer = %peer))]
pub async fn handle(stream: TcpStream, peer: SocketAddr, store: Arc<Store>) -> std::io::Result<()> {
    tracing::info!("client connected");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut served = 0u64;
    while let Some(line) = lines.next_line().await? {
        tracing::trace!(line = %line, "read");
        let reply = match cmd::parse(&line) {
            Ok(Command::Slow { ms }) => cmd::slow(ms).await,
            Ok(command) => cmd::apply(&store, &command),
            Err(err) => {
                tracing::warn!(%err, "bad command");
                Reply::Err(err.0)
            }
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
        served += 1;
    }
    tracing::info!(served, "client left");
    Ok(())
}
