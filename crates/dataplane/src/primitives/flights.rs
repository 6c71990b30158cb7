//! Concurrent misses for one key share one fetch. The fetch runs in its own task, so a caller
//! that gives up (its deadline passed, it went away) never cancels the fetch the others wait on.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::protocol::error::GatewayError;

type Outcome<V> = Option<Result<V, GatewayError>>;

struct Forget<K: Eq + Hash, V> {
    inflight: Arc<Mutex<HashMap<K, watch::Receiver<Outcome<V>>>>>,
    key: K,
}

impl<K: Eq + Hash, V> Drop for Forget<K, V> {
    fn drop(&mut self) {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

pub struct Flights<K, V> {
    inflight: Arc<Mutex<HashMap<K, watch::Receiver<Outcome<V>>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The result of the fetch under way for `key`, or of a new one made by `fetch`; and
    /// whether this caller started it (the leader).
    pub async fn run<F>(&self, key: K, fetch: impl FnOnce() -> F) -> (Result<V, GatewayError>, bool)
    where
        F: Future<Output = Result<V, GatewayError>> + Send + 'static,
    {
        let (mut receiver, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(receiver) => (receiver.clone(), false),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    inflight.insert(key.clone(), receiver.clone());
                    let future = crate::traces::within(crate::traces::current(), fetch());
                    let inflight = self.inflight.clone();
                    tokio::spawn(async move {
                        // Removed however the fetch ends (a panic included), so the next miss
                        // starts a new fetch instead of waiting on a dead one.
                        let _done = Forget { inflight, key };
                        let outcome = future.await;
                        let _ = sender.send(Some(outcome));
                    });
                    (receiver, true)
                }
            }
        };
        let outcome = match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| Err(GatewayError::Internal("no answer".into()))),
            Err(_) => Err(GatewayError::Internal(
                "a shared fetch ended without an answer".into(),
            )),
        };
        (outcome, leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch_and_survive_a_caller_leaving() {
        let flights: Arc<Flights<&str, usize>> = Arc::default();
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = |fetches: Arc<AtomicUsize>| {
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(7)
            }
        };
        let leaver = {
            let (flights, fetches) = (flights.clone(), fetches.clone());
            tokio::spawn(async move { flights.run("k", fetch(fetches)).await.0 })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        leaver.abort();
        let (a, b) = tokio::join!(
            flights.run("k", fetch(fetches.clone())),
            flights.run("k", fetch(fetches.clone()))
        );
        assert_eq!((a.0, b.0), (Ok(7), Ok(7)));
        assert!(!(a.1 && b.1)); // one leader at most (the leaver may have been it)
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
