//! Endpoints found by DNS. A pool endpoint `dns:NAME:PORT` (gRPC's `dns:///NAME:PORT` too)
//! stands for every address NAME resolves to, as for a Kubernetes headless Service: each address
//! is an endpoint of its own (its own connection, health checks and P2C weight). The name is
//! resolved at start, again every `dns_refresh_s`, and soon after a connection to one of its
//! addresses fails (at most once a second). An address that appears joins the pool and takes
//! traffic once its health check passes; one that disappears leaves it (requests under way on it
//! finish; its connection closes with the last of them). While DNS fails the last good set is kept.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use serde::Serialize;
use tokio::sync::{watch, Notify};

const PREFIX: &str = "dns:";
/// Re-resolving after a connection failure waits at least this long after the last resolution.
const MIN_GAP: Duration = Duration::from_secs(1);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// `dns:NAME:PORT` as given, and its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsName {
    pub spec: String,
    pub host: String,
    pub port: u16,
}

/// None when `spec` is no `dns:` target (a plain HOST:PORT); else the name, or what is wrong.
pub fn parse(spec: &str) -> Option<Result<DnsName, String>> {
    let rest = spec.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix("///").unwrap_or(rest);
    let parsed = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port
            .parse::<u16>()
            .map(|port| DnsName {
                spec: spec.to_owned(),
                host: host.to_owned(),
                port,
            })
            .map_err(|_| format!("{spec:?}: the port is not a number 0..65535")),
        _ => Err(format!("{spec:?}: expected dns:NAME:PORT")),
    };
    Some(parsed)
}

/// `ip:port`, with IPv6 in brackets.
pub fn address(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// What one name resolved to last, and how resolving it has gone.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct NameStatus {
    pub name: String,
    /// The last good set (kept while DNS fails).
    pub addresses: Vec<String>,
    pub resolutions: u64,
    pub failures: u64,
    /// The resolver's answer when the last resolution failed ("" after a good one).
    pub last_error: String,
}

impl NameStatus {
    /// A resolution's outcome: the set to install, when it is one (an empty answer is a
    /// failure: the last good set stays).
    pub fn record(&mut self, answer: Result<Vec<String>, String>) -> Option<&[String]> {
        self.resolutions += 1;
        match answer {
            Ok(mut addresses) if !addresses.is_empty() => {
                addresses.sort();
                addresses.dedup();
                self.addresses = addresses;
                self.last_error.clear();
                Some(&self.addresses)
            }
            Ok(_) => {
                self.failures += 1;
                self.last_error = "no addresses".into();
                None
            }
            Err(error) => {
                self.failures += 1;
                self.last_error = error;
                None
            }
        }
    }
}

/// A pool's names, their status, and the signal that asks for an early re-resolution.
pub struct Discovery {
    pub names: Vec<DnsName>,
    pub status: Mutex<Vec<NameStatus>>,
    pub refresh: Notify,
    pub interval: Duration,
    pub resolver: Option<SocketAddr>,
}

impl Discovery {
    pub fn new(
        names: Vec<DnsName>,
        interval_s: f64,
        resolver: Option<&str>,
    ) -> Result<Discovery, String> {
        let resolver = resolver
            .map(|text| {
                text.parse::<SocketAddr>()
                    .map_err(|_| format!("dns_resolver {text:?}: expected IP:PORT"))
            })
            .transpose()?;
        let status = names
            .iter()
            .map(|n| NameStatus {
                name: n.spec.clone(),
                ..NameStatus::default()
            })
            .collect();
        Ok(Discovery {
            names,
            status: Mutex::new(status),
            refresh: Notify::new(),
            interval: Duration::from_secs_f64(interval_s.max(0.05)),
            resolver,
        })
    }

    pub fn snapshot(&self) -> Vec<NameStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why a name has no addresses yet, for the caller's UNAVAILABLE ("" when every name has some).
    pub fn unresolved(&self) -> String {
        self.snapshot()
            .iter()
            .filter(|s| s.addresses.is_empty())
            .map(|s| {
                let why = if s.last_error.is_empty() {
                    "not resolved yet"
                } else {
                    &s.last_error
                };
                format!("{} did not resolve ({why})", s.name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The resolver: the configured server (`dns_resolver`), else the system's (/etc/resolv.conf
    /// and /etc/hosts).
    pub fn resolver(&self) -> Result<TokioResolver, String> {
        let mut builder = match self.resolver {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    server.ip(),
                    true,
                    vec![udp, tcp],
                )]);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
            None => TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?,
        };
        let options = builder.options_mut();
        options.cache_size = 0; // every refresh asks the server: the set may change at any time
        options.timeout = LOOKUP_TIMEOUT;
        options.attempts = 1;
        builder.build().map_err(|e| format!("resolver: {e}"))
    }
}

impl Discovery {
    /// Resolve every name once; `install` gets the addresses of each name that answered (the
    /// last good set stays for one that did not; `pool` names it in the log).
    pub async fn resolve(
        &self,
        resolver: &TokioResolver,
        pool: &str,
        install: impl Fn(&DnsName, &[String]),
    ) {
        for (index, name) in self.names.iter().enumerate() {
            let lookup = resolver.lookup_ip(name.host.as_str());
            let answer = match tokio::time::timeout(LOOKUP_TIMEOUT * 2, lookup).await {
                Ok(Ok(found)) => Ok(found.iter().map(|ip| address(ip, name.port)).collect()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("the resolver did not answer in time".to_owned()),
            };
            let (addresses, error, changed) = {
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                let entry = &mut status[index];
                let previous_error = entry.last_error.clone();
                let addresses = entry.record(answer).map(<[String]>::to_vec);
                let changed = entry.last_error != previous_error;
                (addresses, entry.last_error.clone(), changed)
            };
            match addresses {
                Some(addresses) => install(name, &addresses),
                None if changed => eprintln!(
                    "gateway core: pool {pool}: {} did not resolve ({error}); keeping its last addresses",
                    name.spec
                ),
                None => {}
            }
        }
    }

    /// Wait for the next resolution: the interval, or soon after a connection failure asked for
    /// one (`last`: when the previous one was). False once `stop` says so.
    pub async fn next_round(
        &self,
        last: Instant,
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.interval) => true,
            () = self.refresh.notified() => {
                let wait = MIN_GAP.saturating_sub(last.elapsed());
                tokio::select! {
                    () = tokio::time::sleep(wait) => true,
                    _ = stop.changed() => false,
                }
            }
            _ = stop.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets_are_told_from_addresses_and_checked() {
        assert_eq!(parse("triton:8001"), None);
        let name = parse("dns:triton-headless:8001").unwrap().unwrap();
        assert_eq!((name.host.as_str(), name.port), ("triton-headless", 8001));
        let grpc_style = parse("dns:///triton.default.svc:8001").unwrap().unwrap();
        assert_eq!(grpc_style.host, "triton.default.svc");
        assert!(parse("dns:triton").unwrap().is_err());
        assert!(parse("dns:triton:99999").unwrap().is_err());
        assert!(parse("dns::8001").unwrap().is_err());
        assert_eq!(address("::1".parse().unwrap(), 8001), "[::1]:8001");
    }

    #[test]
    fn a_failed_or_empty_resolution_keeps_the_last_good_set() {
        let mut status = NameStatus::default();
        let first = status.record(Ok(vec!["10.0.0.2:1".into(), "10.0.0.1:1".into()]));
        assert_eq!(first.unwrap(), ["10.0.0.1:1", "10.0.0.2:1"]);
        assert!(status.record(Err("NXDOMAIN".into())).is_none());
        assert!(status.record(Ok(vec![])).is_none());
        assert_eq!(status.addresses, ["10.0.0.1:1", "10.0.0.2:1"]);
        assert_eq!((status.resolutions, status.failures), (3, 2));
        assert_eq!(status.last_error, "no addresses");
        assert!(status.record(Ok(vec!["10.0.0.3:1".into()])).is_some());
        assert!(status.last_error.is_empty() && status.addresses == ["10.0.0.3:1"]);
    }
}
