//! Tier 1: serialized answers in process, bounded by bytes, each with its expiry. The eviction
//! policy is quick_cache's (S3-FIFO-like: an entry hit again outlives one-off entries).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use super::key::Digest;

/// The public model, the variant and the digest: invalidation goes by the first two.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub model: String,
    pub variant: String,
    pub digest: Digest,
}

#[derive(Clone)]
pub struct Entry {
    value: Bytes,
    expires: Instant,
}

#[derive(Clone)]
struct Size;

impl Weighter<Key, Entry> for Size {
    fn weight(&self, _key: &Key, entry: &Entry) -> u64 {
        entry.value.len().max(1) as u64
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Key, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut Self::RequestState, _key: Key, _entry: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct L1 {
    entries: Cache<Key, Entry, Size, DefaultHashBuilder, CountEvictions>,
    pub max_bytes: u64,
    evictions: Arc<AtomicU64>,
}

impl L1 {
    pub fn new(max_bytes: u64) -> L1 {
        let evictions = Arc::new(AtomicU64::new(0));
        // Answers of a few KB are typical; shards hold at least 32 entries each.
        let estimated = usize::try_from(max_bytes / 4096)
            .unwrap_or(usize::MAX)
            .max(16);
        L1 {
            entries: Cache::with(
                estimated,
                max_bytes,
                Size,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            max_bytes,
            evictions,
        }
    }

    pub fn get(&self, key: &Key, now: Instant) -> Option<Bytes> {
        let entry = self.entries.get(key)?;
        if entry.expires <= now {
            self.entries.remove(key);
            return None;
        }
        Some(entry.value)
    }

    /// Stored unless the value alone exceeds the bound.
    pub fn put(&self, key: Key, value: Bytes, ttl: Duration, now: Instant) -> bool {
        if value.len() as u64 > self.max_bytes {
            return false;
        }
        let expires = now + ttl;
        self.entries.insert(key, Entry { value, expires });
        true
    }

    /// Drop the entries of `model` (and `variant`), or all of them; how many were dropped.
    pub fn discard(&self, model: &str, variant: &str) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|key, _| {
            !(model.is_empty()
                || (key.model == model && (variant.is_empty() || key.variant == variant)))
        });
        before.saturating_sub(self.entries.len()) as u64
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, variant: &str, n: u8) -> Key {
        Key {
            model: model.into(),
            variant: variant.into(),
            digest: [n; 16],
        }
    }

    #[test]
    fn bounded_by_bytes_with_expiry_and_invalidation() {
        let l1 = L1::new(3500);
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        for n in 0..5 {
            assert!(l1.put(key("m", "a", n), Bytes::from(vec![n; 1100]), ttl, now));
        }
        assert_eq!((l1.len(), l1.evictions()), (3, 2));
        assert!(l1.bytes() <= 3500);
        assert!(l1.get(&key("m", "a", 4), now).is_some());
        assert!(l1.get(&key("m", "a", 0), now).is_none());
        assert!(!l1.put(key("m", "a", 9), Bytes::from(vec![0; 4000]), ttl, now));
        assert!(l1.get(&key("m", "a", 4), now + ttl).is_none()); // expired
        l1.put(key("n", "a", 1), Bytes::from_static(b"x"), ttl, now);
        l1.put(key("n", "b", 2), Bytes::from_static(b"y"), ttl, now);
        assert_eq!(l1.discard("n", "b"), 1);
        let remaining = l1.len() as u64;
        assert_eq!(l1.discard("", ""), remaining);
        assert_eq!(l1.len(), 0);
    }
}
