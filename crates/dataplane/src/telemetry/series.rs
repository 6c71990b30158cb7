//! The series the metrics are read from: counters and histograms per label set. A label set seen
//! before is found by the labels the record holds, borrowed: no key is built for each request,
//! only for the first of its label set.

use hashbrown::HashMap;

use crate::primitives::borrowed::Borrowed;
use crate::primitives::histogram::Histogram;
use crate::protocol::grpc::Code;
use crate::telemetry::streamed::StreamSeries;

/// Values per label set.
pub struct Labelled<V, const N: usize>(HashMap<[String; N], V>);

impl<V, const N: usize> Default for Labelled<V, N> {
    fn default() -> Self {
        Labelled(HashMap::new())
    }
}

impl<V: Default, const N: usize> Labelled<V, N> {
    /// `update` applied to the value of `labels` (a default one the first time).
    pub fn update(&mut self, labels: [&str; N], update: impl FnOnce(&mut V)) {
        if let Some(value) = self.0.get_mut(&Borrowed(labels)) {
            update(value);
            return;
        }
        let mut value = V::default();
        update(&mut value);
        self.0.insert(Borrowed(labels).owned(), value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[String; N], &V)> {
        self.0.iter()
    }
}

/// Requests per status code (a label set sees few).
#[derive(Default)]
pub struct Codes(Vec<(Code, u64)>);

impl Codes {
    pub fn count(&mut self, code: Code) {
        match self.0.iter_mut().find(|(seen, _)| *seen == code) {
            Some((_, count)) => *count += 1,
            None => self.0.push((code, 1)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Code, u64)> {
        self.0.iter()
    }
}

/// The RPCs of one label set: how many ended with each code, and how long they took.
#[derive(Default)]
pub struct Calls {
    pub codes: Codes,
    pub durations: Histogram,
}

#[derive(Default)]
pub struct Series {
    pub calls: Labelled<Calls, 3>,          // method, model, variant
    pub upstream: Labelled<Histogram, 3>,   // pool, model, variant
    pub variants: Labelled<Histogram, 2>,   // model, variant (ModelInfer)
    pub cache: Labelled<u64, 2>,            // model, outcome (ModelInfer)
    pub streams: Labelled<StreamSeries, 2>, // model, variant (requests of ModelStreamInfer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_is_found_again_by_borrowed_labels() {
        let mut series = Series::default();
        for code in [Code::Ok, Code::Ok, Code::Unavailable] {
            series
                .calls
                .update(["ModelInfer", "m", "blue"], |calls| calls.codes.count(code));
        }
        series.calls.update(["ModelInfer", "m", "green"], |calls| {
            calls.codes.count(Code::Ok)
        });
        let mut seen: Vec<_> = series
            .calls
            .iter()
            .flat_map(|(labels, calls)| {
                calls
                    .codes
                    .iter()
                    .map(move |(code, n)| (labels[2].clone(), code.name(), *n))
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("blue".to_owned(), "OK", 2),
                ("blue".to_owned(), "UNAVAILABLE", 1),
                ("green".to_owned(), "OK", 1)
            ]
        );
    }

    #[test]
    fn labels_that_only_join_alike_are_kept_apart() {
        let mut cache: Labelled<u64, 2> = Labelled::default();
        cache.update(["ab", "c"], |n| *n += 1);
        cache.update(["a", "bc"], |n| *n += 1);
        cache.update(["ab", "c"], |n| *n += 1);
        let mut counts: Vec<_> = cache.iter().map(|(k, n)| (k.clone(), *n)).collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                (["a".to_owned(), "bc".to_owned()], 1),
                (["ab".to_owned(), "c".to_owned()], 2)
            ]
        );
    }
}
