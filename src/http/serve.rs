//! The gate's HTTP server: HTTP/1.1 with keep-alive, served by hyper's connection builder
//! with a timer, so that a client cannot hold a connection (and a task) by stalling.
//!
//! What `axum::serve` gave is kept: the peer address as `ConnectInfo<SocketAddr>` (the ops
//! pages tell loopback from the rest), keep-alive, graceful shutdown (on cancel the listener
//! closes, idle connections close, requests in flight are answered, then the task ends), and
//! accept errors (out of file descriptors, …) logged and retried after a pause instead of
//! ending the server. HTTP/2 is not served, as before: axum is built without its `http2`
//! feature, so `axum::serve` answered HTTP/1 only.
//!
//! Added: `header_timeout` (gate.yaml `server.header_timeout_ms`). A connection must deliver
//! a request's whole head (request line and headers) within it, counted from when the gate
//! starts waiting for that head: from the accept for the first request, from the end of the
//! previous response for the next ones on a keep-alive connection. Otherwise it is closed
//! without an answer. So a client that sends half a request and stalls, trickles its headers
//! byte by byte, or keeps an idle connection open, is cut off after `header_timeout`. The body
//! has its own deadline once the head is in (`body.rs`).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// How long the accept loop pauses after an error that is not a single connection's (such as
/// EMFILE): connections closing meanwhile free what the next accept needs.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `cancel`, then lets the requests in flight finish and
/// returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    cancel: CancellationToken,
) {
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = accept(&listener, &cancel).await {
        let service = match make.call(peer).await {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    tracing::debug!(%peer, "request head not received within server.header_timeout_ms; connection closed");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection, or None once `cancel` fires. Errors of one connection (reset before
/// it was accepted) are skipped; others are logged and retried after [`ACCEPT_PAUSE`].
async fn accept(
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying in {ACCEPT_PAUSE:?}");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => {}
                }
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
