//! The TLS accept every TLS listener uses: within one deadline (the handshake timeout) it
//! peeks at the first byte, answers a plaintext client in plain words instead of failing
//! inside the TLS library, and completes the handshake. A failure or a timeout ends the
//! connection without a word; only the debug log says which phase it was.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Time allowed to write the plaintext answer, and then to close.
const PLAINTEXT_WRITE: Duration = Duration::from_secs(1);

/// Time spent reading (and dropping) what a plaintext client still sends after its answer.
const PLAINTEXT_DRAIN: Duration = Duration::from_secs(1);

/// Accepts a TLS connection on `tcp` within `limit`. A client whose first byte is not a
/// TLS handshake record is sent `plaintext_reply` (the front end's words, one line), then
/// closed. `None`: the connection is over (plaintext, failed, timed out).
pub(crate) async fn accept_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    limit: Duration,
    plaintext_reply: &[u8],
) -> Option<TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + limit;
    let port = tcp.local_addr().map_or(0, |a| a.port());
    let mut first = [0u8; 1];
    match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::debug!(%peer, port, "plaintext client on a TLS port");
            // Boxed: its read buffer must not enlarge every connection's task.
            Box::pin(answer_plaintext(tcp, plaintext_reply)).await;
            return None;
        }
        _ => return None,
    }
    match timeout_at(deadline, Box::pin(acceptor.accept(tcp))).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, port, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, port, "TLS handshake timed out");
            None
        }
    }
}

/// Tells a plaintext client what the port speaks and closes the connection.
async fn answer_plaintext(mut tcp: TcpStream, reply: &[u8]) {
    let _ = timeout(PLAINTEXT_WRITE, tcp.write_all(reply)).await;
    let _ = timeout(PLAINTEXT_WRITE, tcp.shutdown()).await;
    // Read what the client already sent (briefly, boundedly): closing with unread input
    // would reset the connection and could destroy the reply before it is read.
    let mut sink = [0u8; 4096];
    let _ = timeout(PLAINTEXT_DRAIN, async {
        for _ in 0..16 {
            if !matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
}
