//! The data port's listener: connections accepted (plain or TLS), each served over HTTP/2 until
//! it ends, asked to go away at shutdown or at its maximum age.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::state::State;

use crate::edge::request::handle;

type Http2 = hyper::server::conn::http2::Builder<TokioExecutor>;

/// When a connection is asked to go: at shutdown, and once it is `max_age` old (clients then
/// reconnect, and are spread again over replicas); after the ask, `grace` more to finish.
#[derive(Clone)]
struct Lifetime {
    stop: watch::Receiver<Option<Duration>>,
    max_age: Option<Duration>,
}

/// One client connection, plain or TLS, served until it ends; asked to go away (GOAWAY, the
/// calls under way finish) at shutdown or at its maximum age.
fn spawn_connection<I>(
    state: &Arc<State>,
    builder: &Http2,
    mut lifetime: Lifetime,
    connections: &mut JoinSet<()>,
    io: I,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = state.clone();
    let service = service_fn(move |request| handle(state.clone(), request));
    let connection = builder.serve_connection(io, service);
    connections.spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let far = Duration::from_secs(365 * 24 * 3600);
        let aged = tokio::time::sleep(lifetime.max_age.unwrap_or(far));
        let mut aged = std::pin::pin!(aged);
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                () = &mut aged, if deadline.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    deadline = Some(Box::pin(tokio::time::sleep(lifetime.max_age.unwrap_or(far))));
                }
                changed = lifetime.stop.changed(), if deadline.is_none() => {
                    let grace = (*lifetime.stop.borrow()).unwrap_or_default();
                    if changed.is_err() || lifetime.stop.borrow().is_some() {
                        connection.as_mut().graceful_shutdown();
                        deadline = Some(Box::pin(tokio::time::sleep(grace)));
                    }
                }
                () = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => return,
            }
        }
    });
}

/// Serve until `stop` holds a grace period; then stop accepting, ask every connection to go
/// away, and give the calls under way that long to finish.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(1024)
        .max_send_buf_size(4 << 20);
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
                    None => spawn_connection(&state, &builder, lifetime.clone(), &mut connections, TokioIo::new(stream)),
                    Some(acceptor) => {
                        // The handshake in a task of its own: a slow client never holds up accept.
                        let (acceptor, state, builder, lifetime) = (acceptor.clone(), state.clone(), builder.clone(), lifetime.clone());
                        connections.spawn(async move {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                            if let Ok(Ok(stream)) = handshake.await {
                                let mut inner = JoinSet::new();
                                spawn_connection(&state, &builder, lifetime, &mut inner, TokioIo::new(stream));
                                while inner.join_next().await.is_some() {}
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
