//! Keys of owned strings looked up by borrowed ones: a map keyed by `[String; N]` is searched with
//! the `&str`s at hand, no key built (nor allocated) for each lookup.

use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;

/// `N` strings borrowed, hashed as the array of `String`s with the same text is.
pub struct Borrowed<'a, const N: usize>(pub [&'a str; N]);

impl<const N: usize> Hash for Borrowed<'_, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<const N: usize> Equivalent<[String; N]> for Borrowed<'_, N> {
    fn equivalent(&self, key: &[String; N]) -> bool {
        self.0.iter().zip(key).all(|(mine, theirs)| *mine == theirs)
    }
}

impl<const N: usize> Borrowed<'_, N> {
    pub fn owned(&self) -> [String; N] {
        self.0.map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_key_is_found_by_its_borrowed_strings() {
        let mut map = hashbrown::HashMap::new();
        map.insert(["pool".to_owned(), "model".to_owned(), "1".to_owned()], 7);
        assert_eq!(map.get(&Borrowed(["pool", "model", "1"])), Some(&7));
        assert_eq!(map.get(&Borrowed(["pool", "model", "2"])), None);
        assert_eq!(map.get(&Borrowed(["poolm", "odel", "1"])), None);
        assert_eq!(
            Borrowed(["a", "b"]).owned(),
            ["a".to_owned(), "b".to_owned()]
        );
    }
}
