//! The client connections' plumbing below `channel`: the socket to a server (`Dialer`), the
//! keepalive pings of a connection with calls under way, and the lean client's connections to
//! one server (`LeanSet`): up to a configured number, opened as the calls need them.
//!
//! A call goes on the lean connection with the least under way, weighed in request bytes. When
//! every open one carries `CROWDED` bytes or more, one more is opened in the background (the call
//! does not wait for it), up to the limit: small requests share one connection until a MiB of them
//! is under way (their frames share the writes), large ones spread. That matters to Triton: its gRPC
//! front end reads a connection carrying many large requests into ever larger fresh buffers, and
//! spent ~30% more CPU a request on the 602 KB `image` model with sixteen callers' requests on
//! one connection than spread over eight.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::protocol::http2;
use crate::protocol::streams::Open;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a connection with calls under way pings its server, and how long it waits for the
/// answer before it takes the connection for dead (its calls then fail and are retried).
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the connection's task looks whether it should ping.
const KEEPALIVE_TICK: Duration = Duration::from_secs(1);
/// How long a ping asked for by `Channel::check` waits for its answer. A server that is only slow
/// answers pings at once (its HTTP/2 layer does, whatever its models are doing).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's socket: TCP, or TLS over it.
pub(super) trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Opens sockets to one server: TCP, and TLS over it when configured.
#[derive(Clone)]
pub(super) struct Dialer {
    pub(super) address: String,
    pub(super) tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    pub(super) async fn dial(&self) -> Result<Box<dyn Io>, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Box::new(stream))
    }
}

/// Pings a connection's server: true once it answered.
pub(super) trait Pings {
    fn ping(&mut self, wait: Duration) -> impl std::future::Future<Output = bool> + Send;
}

impl Pings for Option<h2::PingPong> {
    async fn ping(&mut self, wait: Duration) -> bool {
        let Some(pings) = self.as_mut() else {
            return std::future::pending().await;
        };
        let pong = tokio::time::timeout(wait, pings.ping(h2::Ping::opaque()));
        matches!(pong.await, Ok(Ok(_)))
    }
}

impl Pings for http2::Pinger {
    async fn ping(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, http2::Pinger::ping(self)).await,
            Ok(Ok(()))
        )
    }
}

/// Pings only while calls are under way (gRPC servers refuse too many on an idle connection):
/// every KEEPALIVE while busy, and at once when a call starts on one that sat idle that long (it
/// may have died silently meanwhile); and whenever asked to (the endpoint's health probe got no
/// answer), with a short wait: a connection whose server is cut off is closed then, so its
/// calls fail (and are retried elsewhere) instead of waiting for their deadlines. Returns when a
/// ping went unanswered.
pub(super) async fn keepalive(mut pings: impl Pings, open: Arc<AtomicUsize>, check: Arc<Notify>) {
    let (mut pinged, mut idle_since) = (Instant::now(), Some(Instant::now()));
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep(KEEPALIVE_TICK) => false,
            () = check.notified() => true,
        };
        let now = Instant::now();
        let wait = if asked {
            CHECK_TIMEOUT
        } else {
            if open.load(Ordering::Relaxed) == 0 {
                idle_since.get_or_insert(now);
                continue;
            }
            let woke_after_idle = idle_since
                .take()
                .is_some_and(|since| now - since >= KEEPALIVE);
            if !woke_after_idle && now - pinged < KEEPALIVE {
                continue;
            }
            KEEPALIVE_TIMEOUT
        };
        pinged = now;
        if !pings.ping(wait).await {
            return;
        }
    }
}

/// One of the lean client's connections, for calls whose request is one whole message.
#[derive(Clone)]
pub(super) struct Lean {
    pub(super) connection: http2::Connection,
    /// What is under way on it, from the moment a call is put on it until its answer's body is
    /// dropped: each call weighs its request's bytes and one (zero: idle, when keepalive rests).
    load: Arc<AtomicUsize>,
    check: Arc<Notify>,
}

/// The lean client's connection over `io`, driven by a task of its own until it closes.
fn lean(io: Box<dyn Io>) -> Lean {
    let (connection, driver) = http2::Connection::new(io);
    let lean = Lean {
        connection,
        load: Arc::new(AtomicUsize::new(0)),
        check: Arc::new(Notify::new()),
    };
    let pinger = lean.connection.pinger();
    let (load, check) = (lean.load.clone(), lean.check.clone());
    let closing = lean.connection.pinger();
    tokio::spawn(async move {
        tokio::select! {
            _ = driver => {}
            () = keepalive(pinger, load, check) => {
                closing.close("the server did not answer a ping");
            }
        }
    });
    lean
}

/// The load (bytes of requests under way) on every open connection at which one more is opened.
const CROWDED: usize = 1 << 20;

/// Where the next call goes, from the load on each open connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pick {
    /// On this one.
    Use(usize),
    /// On this one, and one more connection is opened for the calls after it.
    UseAndGrow(usize),
    /// None is open: the call waits for one.
    Connect,
}

/// The connection with the least load (the first of equals); one more is wanted when even that
/// one is `CROWDED` and there are fewer than `limit`.
pub(super) fn pick(loads: impl IntoIterator<Item = usize>, limit: usize) -> Pick {
    let (mut count, mut best) = (0, None);
    for (index, load) in loads.into_iter().enumerate() {
        count += 1;
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((index, load));
        }
    }
    match best {
        None => Pick::Connect,
        Some((index, load)) if load >= CROWDED && count < limit => Pick::UseAndGrow(index),
        Some((index, _)) => Pick::Use(index),
    }
}

/// The lean client's connections to one server.
pub(super) struct LeanSet {
    dialer: Dialer,
    limit: usize,
    open: Mutex<Vec<Lean>>,
    /// A connection is being opened in the background.
    growing: AtomicBool,
    /// One call at a time opens the first connection; the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

impl LeanSet {
    pub(super) fn new(dialer: Dialer, limit: usize) -> Arc<LeanSet> {
        Arc::new(LeanSet {
            dialer,
            limit: limit.max(1),
            open: Mutex::new(Vec::new()),
            growing: AtomicBool::new(false),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Asks every connection to ping its server now (`Channel::check`).
    pub(super) fn check(&self) {
        for lean in self.open.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            lean.check.notify_one();
        }
    }

    /// Those open (not closed nor going away).
    pub(super) fn count(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().filter(|l| !l.connection.is_closed()).count()
    }

    /// A connection for a call whose request is `bytes` long, counted as under way on it until
    /// the `Open` is dropped; one is opened when none is (Err: why it could not be).
    pub(super) async fn take(self: &Arc<Self>, bytes: usize) -> Result<(Lean, Open), String> {
        if let Some(taken) = self.pick(bytes) {
            return Ok(taken);
        }
        Box::pin(self.connect_first(bytes)).await
    }

    /// The least loaded open connection, and one more opened in the background when it is
    /// crowded; None when none is open. Connections closed or going away leave the set here: no
    /// new call goes on them (those under way finish there) and they count against no limit.
    fn pick(self: &Arc<Self>, bytes: usize) -> Option<(Lean, Open)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|l| !l.connection.is_closed());
        let loads = open.iter().map(|l| l.load.load(Ordering::Relaxed));
        let index = match pick(loads, self.limit) {
            Pick::Connect => return None,
            Pick::Use(index) => index,
            Pick::UseAndGrow(index) => {
                self.grow();
                index
            }
        };
        let lean = open[index].clone();
        let taken = Open::weighing(&lean.load, bytes + 1);
        Some((lean, taken))
    }

    /// Opens one more connection in the background, unless one is being opened already. The task
    /// does not keep the set alive: an endpoint gone from its pool meanwhile keeps no connection.
    fn grow(self: &Arc<Self>) {
        if self.growing.swap(true, Ordering::Relaxed) {
            return;
        }
        let (set, dialer) = (Arc::downgrade(self), self.dialer.clone());
        tokio::spawn(async move {
            let dialed = dialer.dial().await;
            if let Some(set) = set.upgrade() {
                // A server that cannot be reached now is tried again by a later call.
                if let Ok(io) = dialed {
                    set.add(lean(io));
                }
                set.growing.store(false, Ordering::Relaxed);
            }
        });
    }

    fn add(&self, lean: Lean) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|l| !l.connection.is_closed());
        if open.len() < self.limit {
            open.push(lean);
        }
    }

    async fn connect_first(self: &Arc<Self>, bytes: usize) -> Result<(Lean, Open), String> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(taken) = self.pick(bytes) {
            return Ok(taken);
        }
        let lean = lean(self.dialer.dial().await?);
        let taken = Open::weighing(&lean.load, bytes + 1);
        self.add(lean.clone());
        Ok((lean, taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_goes_on_the_least_loaded_connection_and_more_open_only_when_all_are_crowded() {
        const MB: usize = 1 << 20;
        assert_eq!(pick([], 4), Pick::Connect);
        assert_eq!(pick([0], 4), Pick::Use(0));
        assert_eq!(pick([40], 4), Pick::Use(0)); // many small calls share one
        assert_eq!(pick([MB - 1], 4), Pick::Use(0));
        assert_eq!(pick([MB], 4), Pick::UseAndGrow(0));
        assert_eq!(pick([3 * MB, 0, 2 * MB], 4), Pick::Use(1));
        assert_eq!(pick([3 * MB, 100, 2 * MB], 4), Pick::Use(1));
        assert_eq!(pick([4 * MB, 2 * MB, 3 * MB], 4), Pick::UseAndGrow(1));
        assert_eq!(pick([3 * MB, 2 * MB, 2 * MB], 4), Pick::UseAndGrow(1)); // the first of equals
        assert_eq!(pick([2 * MB, 5 * MB, 3 * MB, 4 * MB], 4), Pick::Use(0)); // at the limit
        assert_eq!(pick([7 * MB], 1), Pick::Use(0));
    }
}
