//! Where prompt prefixes and sessions were last sent, per pool (pure): keys to endpoint
//! addresses, bounded (`affine` reads and writes it).

use std::collections::HashMap;
use std::sync::Arc;

/// Keys to endpoint addresses, about `capacity` of them: two generations, the older dropped
/// whole when the newer fills (a key read from the older moves to the newer).
pub struct PrefixIndex {
    current: HashMap<u64, Arc<str>>,
    previous: HashMap<u64, Arc<str>>,
    capacity: usize,
}

impl PrefixIndex {
    pub fn new(capacity: usize) -> PrefixIndex {
        PrefixIndex {
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(2),
        }
    }

    pub fn get(&mut self, key: u64) -> Option<Arc<str>> {
        if let Some(address) = self.current.get(&key) {
            return Some(address.clone());
        }
        let address = self.previous.remove(&key)?;
        self.put(key, address.clone());
        Some(address)
    }

    pub fn put(&mut self, key: u64, address: Arc<str>) {
        if self.current.len() >= self.capacity / 2 && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, address);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_about_its_capacity_and_what_is_read_survives() {
        let mut index = PrefixIndex::new(8);
        let address: Arc<str> = Arc::from("a:1");
        for key in 0..4 {
            index.put(key, address.clone());
        }
        assert_eq!(index.get(0).as_deref(), Some("a:1")); // read: moved to the newer generation
        for key in 4..12 {
            index.put(key, address.clone());
        }
        assert!(index.len() <= 8);
        assert!(index.get(11).is_some() && index.get(1).is_none());
    }
}
