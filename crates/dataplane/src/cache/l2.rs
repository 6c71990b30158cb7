//! Tier 2: Redis, shared by every replica; fails open.
//!
//! Every call (connecting included) has a hard timeout and goes through a breaker: while Redis is
//! down the gateway stops asking it (counting the skips) and probes again with exponential
//! back-off. Errors are counted, never surfaced to the request path; the gateway starts whether
//! or not Redis is there. Keys: `{namespace}n1|{model}|{variant}|{digest hex}`: `n1` is the
//! native engine's format, so entries another format wrote are never read as its own.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::breaker::Breaker;
use super::l1::Key;
use super::Counters;

const FORMAT: &str = "n1|";
const RAW: u8 = b'r';
const LZ4: u8 = b'l';

use crate::primitives::locked;

fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn encode(value: &[u8], compress: bool) -> Vec<u8> {
    if compress {
        let mut out = vec![LZ4];
        out.extend_from_slice(&lz4_flex::compress_prepend_size(value));
        out
    } else {
        let mut out = Vec::with_capacity(value.len() + 1);
        out.push(RAW);
        out.extend_from_slice(value);
        out
    }
}

pub fn decode(stored: &[u8]) -> Option<Bytes> {
    match stored.split_first() {
        Some((&RAW, value)) => Some(Bytes::copy_from_slice(value)),
        Some((&LZ4, value)) => lz4_flex::decompress_size_prepended(value)
            .ok()
            .map(Bytes::from),
        _ => None,
    }
}

pub struct L2 {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    prefix: String,
    compress: bool,
    breaker: Mutex<Breaker>,
    counters: Arc<Counters>,
    epoch: Instant,
}

impl L2 {
    /// Err: the URL is not one redis can use (the config's `cache.redis_url`).
    pub fn new(
        url: &str,
        timeout: Duration,
        namespace: &str,
        compress: bool,
        counters: Arc<Counters>,
    ) -> Result<L2, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("cache.redis_url {url:?}: {e}"))?;
        Ok(L2 {
            client,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
            prefix: format!("{namespace}{FORMAT}"),
            compress,
            breaker: Mutex::new(Breaker::default()),
            counters,
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    pub fn breaker_state(&self) -> &'static str {
        locked(&self.breaker).state(self.now())
    }

    pub fn redis_key(&self, key: &Key) -> String {
        let mut hex = String::with_capacity(32);
        for byte in key.digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        format!("{}{}|{}|{hex}", self.prefix, key.model, key.variant)
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = locked(&self.connection).clone() {
            return Ok(connection);
        }
        let _one = self.connecting.lock().await;
        if let Some(connection) = locked(&self.connection).clone() {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *locked(&self.connection) = Some(connection.clone());
        Ok(connection)
    }

    /// `command` on a connection, within the timeout and behind the breaker; None when skipped,
    /// failed or late (counted).
    async fn guarded<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !locked(&self.breaker).allow(self.now()) {
            self.counters.l2_skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let call = async {
            let connection = self.connection().await?;
            command(connection).await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                locked(&self.breaker).success();
                Some(value)
            }
            failed => {
                if matches!(failed, Err(_) | Ok(Err(_))) {
                    self.counters.l2_errors.fetch_add(1, Ordering::Relaxed);
                    locked(&self.breaker).failure(self.now());
                    *locked(&self.connection) = None; // the next call connects anew
                }
                None
            }
        }
    }

    pub async fn get(&self, key: &Key) -> Option<Bytes> {
        let name = self.redis_key(key);
        let stored: Option<Vec<u8>> = self
            .guarded(|mut c| async move { redis::cmd("GET").arg(name).query_async(&mut c).await })
            .await
            .flatten();
        decode(&stored?)
    }

    pub async fn put(&self, key: &Key, value: &[u8], ttl: Duration) {
        let (name, payload) = (self.redis_key(key), encode(value, self.compress));
        let ms = ttl.as_millis().max(1) as u64;
        let set = |mut c: MultiplexedConnection| async move {
            redis::cmd("SET")
                .arg(name)
                .arg(payload)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        };
        self.guarded(set).await;
    }

    /// Delete the keys of `model` (and `variant`), or all of this namespace's; the count deleted.
    /// An operator's call: errors are returned, not swallowed, and the breaker is not asked.
    pub async fn invalidate(&self, model: &str, variant: &str) -> Result<u64, String> {
        let mut pattern = glob_escaped(&self.prefix);
        if !model.is_empty() {
            pattern += &format!("{}|", glob_escaped(model));
            if !variant.is_empty() {
                pattern += &format!("{}|", glob_escaped(variant));
            }
        }
        pattern.push('*');
        let limit = self.timeout.max(Duration::from_secs(2));
        let within =
            |what: &'static str| move |e: tokio::time::error::Elapsed| format!("redis {what}: {e}");
        let mut connection = tokio::time::timeout(limit, self.connection())
            .await
            .map_err(within("connect"))?
            .map_err(|e| format!("redis: {e}"))?;
        let (mut cursor, mut deleted) = (0u64, 0u64);
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500);
            let scan = scan.query_async::<(u64, Vec<String>)>(&mut connection);
            let (next, names) = tokio::time::timeout(limit, scan)
                .await
                .map_err(within("SCAN"))?
                .map_err(|e| format!("redis: {e}"))?;
            if !names.is_empty() {
                let mut delete = redis::cmd("DEL");
                delete.arg(&names);
                let delete = delete.query_async::<u64>(&mut connection);
                deleted += tokio::time::timeout(limit, delete)
                    .await
                    .map_err(within("DEL"))?
                    .map_err(|e| format!("redis: {e}"))?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_raw_and_compressed() {
        let value = b"an answer an answer an answer".repeat(10);
        for compress in [false, true] {
            let stored = encode(&value, compress);
            assert_eq!(decode(&stored).unwrap(), value);
            assert_eq!(stored.len() < value.len(), compress);
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"x?"), None);
    }

    #[test]
    fn patterns_escape_what_glob_would_read() {
        assert_eq!(glob_escaped("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
