//! The data port's listener: connections accepted (plain or TLS), each served over HTTP/2 until
//! it ends, asked to go away at shutdown or at its maximum age.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::edge::request;
use crate::protocol::http2::Server;
use crate::state::State;

/// How long a new connection has to complete its HTTP/2 preface and settings.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a connection is asked to go: at shutdown, and once it is `max_age` old (clients then
/// reconnect, and are spread again over replicas); after the ask, `grace` more to finish.
#[derive(Clone)]
struct Lifetime {
    stop: watch::Receiver<Option<Duration>>,
    max_age: Option<Duration>,
}

/// One client connection, plain or TLS, served (over the core's own HTTP/2 server, `http2`)
/// until it ends: each stream it opens is a task of its own (`request::serve`); asked to go away
/// (GOAWAY, the calls under way finish) at shutdown or at its maximum age.
async fn serve_connection<I>(state: Arc<State>, mut lifetime: Lifetime, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = Server::new(io);
    let handshake = poll_fn(|cx| connection.poll_ready(cx));
    let Ok(Ok(())) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        return;
    };
    let far = Duration::from_secs(365 * 24 * 3600);
    let aged = tokio::time::sleep(lifetime.max_age.unwrap_or(far));
    let mut aged = std::pin::pin!(aged);
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            accepted = poll_fn(|cx| connection.poll_accept(cx)) => match accepted {
                Some((request, respond)) => {
                    // Boxed: the task then holds a pointer, not the request's whole future,
                    // which tokio would copy as it spawns, finishes and drops the task.
                    tokio::spawn(Box::pin(request::serve(state.clone(), request, respond)));
                }
                // The connection ended (or broke): streams under way end with it.
                None => return,
            },
            () = &mut aged, if deadline.is_none() => {
                connection.graceful_shutdown();
                deadline = Some(Box::pin(tokio::time::sleep(lifetime.max_age.unwrap_or(far))));
            }
            changed = lifetime.stop.changed(), if deadline.is_none() => {
                let grace = (*lifetime.stop.borrow()).unwrap_or_default();
                if changed.is_err() || lifetime.stop.borrow().is_some() {
                    connection.graceful_shutdown();
                    deadline = Some(Box::pin(tokio::time::sleep(grace)));
                }
            }
            () = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => return,
        }
    }
}

/// Serve until `stop` holds a grace period; then stop accepting, ask every connection to go
/// away, and give the calls under way that long to finish.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let max_age = state
        .config
        .max_connection_age_s
        .map(Duration::from_secs_f64);
    let lifetime = Lifetime {
        stop: stop.clone(),
        max_age,
    };
    let mut connections = JoinSet::new();
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => {
                while connections.try_join_next().is_some() {} // reap the ended ones
                let Ok((stream, _peer)) = accepted else {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                state.connections_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match &tls {
                    None => {
                        connections.spawn(serve_connection(state.clone(), lifetime.clone(), stream));
                    }
                    Some(acceptor) => {
                        // The handshake in a task of its own: a slow client never holds up accept.
                        let (acceptor, state, lifetime) = (acceptor.clone(), state.clone(), lifetime.clone());
                        connections.spawn(async move {
                            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            if let Ok(Ok(stream)) = handshake.await {
                                serve_connection(state, lifetime, stream).await;
                            }
                        });
                    }
                }
            }
            changed = stop.changed() => {
                let grace = *stop.borrow();
                if changed.is_err() || grace.is_some() {
                    break grace.unwrap_or_default();
                }
            }
        }
    };
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace + Duration::from_millis(100), drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}
