//! One server of a pool: its connection, whether it is ready (and for which models), its
//! ejection state and its latency estimate.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::primitives::clock::now_s;
use crate::protocol::channel::Channel;
use crate::upstream::resilience::{faded, update, EndpointHealth};

pub type ModelKey = (Arc<str>, Arc<str>); // upstream model name, version

/// An endpoint as the admin API shows it (`EndpointStats` in proto/gateway_admin/admin.proto).
#[derive(Serialize)]
pub struct EndpointStats {
    address: String,
    source: String,
    ready: bool,
    ejected: bool,
    ejected_for_s: f64,
    pub outstanding: u64,
    latency_ewma_ms: f64,
    ejections: u64,
    unready_models: Vec<String>,
    connections: usize,
}

/// One server of a pool: its connection, its health and its latency estimate.
pub struct Endpoint {
    pub channel: Channel,
    /// The `dns:NAME:PORT` it was found by, when it was.
    pub source: Option<String>,
    pub outstanding: AtomicU64,
    latency_ewma_bits: AtomicU64,
    /// When the estimate last had a sample (`now_s`, as f64 bits): it fades from then on.
    sampled_at_bits: AtomicU64,
    pub health: Mutex<EndpointHealth>,
    pub ready: AtomicBool, // from the active probe
    pub unready_models: ArcSwap<HashSet<ModelKey>>,
}

impl Endpoint {
    pub(super) fn new(
        address: String,
        health: EndpointHealth,
        tls: Option<(TlsConnector, ServerName<'static>)>,
        connections: usize,
    ) -> Endpoint {
        Endpoint {
            channel: Channel::new(address, tls, connections),
            source: None,
            outstanding: AtomicU64::new(0),
            latency_ewma_bits: AtomicU64::new(0f64.to_bits()),
            sampled_at_bits: AtomicU64::new(0f64.to_bits()),
            health: Mutex::new(health),
            ready: AtomicBool::new(false),
            unready_models: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    pub fn address(&self) -> &str {
        self.channel.address()
    }

    fn since_sample(&self) -> f64 {
        now_s() - f64::from_bits(self.sampled_at_bits.load(Ordering::Relaxed))
    }

    /// The latency estimate now: the EWMA of its calls, faded since the last one.
    pub fn latency_ewma(&self) -> f64 {
        let estimate = f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed));
        faded(estimate, self.since_sample())
    }

    /// A call's latency, observed at `now` (`now_s`).
    pub(super) fn observe(&self, seconds: f64, now: f64) {
        let estimate = f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed));
        let since = now - f64::from_bits(self.sampled_at_bits.load(Ordering::Relaxed));
        let next = update(estimate, since, seconds);
        self.latency_ewma_bits
            .store(next.to_bits(), Ordering::Relaxed);
        self.sampled_at_bits.store(now.to_bits(), Ordering::Relaxed);
    }

    pub fn ejected(&self, now: f64) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ejected(now)
    }

    pub fn eligible(&self, now: f64) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.ejected(now)
    }

    pub fn serves(&self, model: Option<&ModelKey>) -> bool {
        model.is_none_or(|m| !self.unready_models.load().contains(m))
    }

    /// A snapshot of it, at `now` (`now_s`).
    pub fn stats(&self, now: f64) -> EndpointStats {
        let health = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut unready: Vec<String> = self
            .unready_models
            .load()
            .iter()
            .map(|(m, v)| format!("{m}:{v}"))
            .collect();
        unready.sort();
        EndpointStats {
            address: self.address().to_owned(),
            source: self.source.clone().unwrap_or_default(),
            ready: self.ready.load(Ordering::Relaxed),
            ejected: health.ejected(now),
            ejected_for_s: (health.ejected_until - now).max(0.0),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            latency_ewma_ms: self.latency_ewma() * 1000.0,
            ejections: health.total_ejections,
            unready_models: unready,
            connections: self.channel.connections(),
        }
    }
}
