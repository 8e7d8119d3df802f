//! Connections: one task per client, named `conn:<peer>`.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::Services;
use crate::book::Side;

/// Accepts clients until the listener fails.
pub async fn serve(listener: TcpListener, services: Services) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let services = services.clone();
        nodetrace_agent::task::spawn(format!("conn:{peer}"), async move {
            let _ = client(stream, peer.to_string(), services).await;
        });
    }
}

async fn client(stream: TcpStream, peer: String, s: Services) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        s.audit.record(&peer, &line);
        let reply = answer(&s, &line).await;
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await?;
        if line.trim() == "QUIT" {
            break;
        }
    }
    Ok(())
}

async fn answer(s: &Services, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let side = |w: &str| match w {
        "BUY" => Some(Side::Buy),
        "SELL" => Some(Side::Sell),
        _ => None,
    };
    match words.as_slice() {
        [verb, item, qty] if side(verb).is_some() => match qty.parse() {
            Ok(qty) => match s
                .book
                .place(side(verb).unwrap(), (*item).to_owned(), qty)
                .await
            {
                Ok(id) => format!("OK {id}"),
                Err(_) => "ERR the book is gone".to_owned(),
            },
            Err(_) => format!("ERR {qty} is not a quantity"),
        },
        ["BOOK", item] => match s.book.depth((*item).to_owned()).await {
            Ok((buy, sell)) => format!("{item} buy {buy} sell {sell}"),
            Err(_) => "ERR the book is gone".to_owned(),
        },
        ["QUIT"] => "BYE".to_owned(),
        _ => "ERR use BUY item qty, SELL item qty, BOOK item or QUIT".to_owned(),
    }
}
