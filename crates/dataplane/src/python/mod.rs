//! The core's Python boundary (`gateway._core`): the `Core` class the control plane drives at
//! control rate, and `check_route`. Nothing here runs per request.

mod runtime;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::watch;

use crate::config::CoreConfig;
use crate::protocol::reflection::{DescriptorFile, Reflection, ReflectionConfig};
use crate::protocol::tls;
use crate::state::State;
use crate::{config, edge, health, upstream};

use crate::primitives::locked;
use runtime::CoreRuntime;

/// The data plane of one gateway process.
#[pyclass(module = "gateway._core")]
struct Core {
    runtime: Mutex<Option<CoreRuntime>>,
    state: Arc<State>,
    stop: watch::Sender<Option<Duration>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Core {
    /// The runtime's handle, for a control-rate call that waits on the core (GIL released).
    fn handle(&self) -> PyResult<tokio::runtime::Handle> {
        locked(&self.runtime)
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| PyRuntimeError::new_err("the core has stopped"))
    }
}

#[pymethods]
impl Core {
    /// `config`: the JSON of `gateway.native.core_config(...)`; `files`: (name, serialized
    /// FileDescriptorProto, dependencies) for reflection; `symbols`: symbol → file name.
    #[new]
    fn new(
        config: &str,
        services: Vec<String>,
        files: Vec<(String, Vec<u8>, Vec<String>)>,
        symbols: HashMap<String, String>,
    ) -> PyResult<Self> {
        let config: CoreConfig = serde_json::from_str(config)
            .map_err(|e| PyValueError::new_err(format!("core configuration: {e}")))?;
        if config.pools.is_empty() {
            return Err(PyValueError::new_err("core configuration: no pools"));
        }
        let runtime = CoreRuntime::start(config.threads).map_err(|e| {
            PyRuntimeError::new_err(format!("cannot start the core's runtime: {e}"))
        })?;
        let files = files
            .into_iter()
            .map(|(name, descriptor, dependencies)| DescriptorFile {
                name,
                descriptor,
                dependencies,
            })
            .collect();
        let reflection = Reflection::new(ReflectionConfig {
            services,
            files,
            symbols,
        });
        Ok(Core {
            runtime: Mutex::new(Some(runtime)),
            state: Arc::new(State::new(config, reflection).map_err(PyValueError::new_err)?),
            stop: watch::channel(None).0,
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// What the core understood of its configuration, as JSON (the boundary's round-trip test).
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.state.config)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Bind the data port, run a first health round, serve. The bound port.
    fn start(&self, py: Python<'_>) -> PyResult<u16> {
        let state = self.state.clone();
        let stop = self.stop.subscribe();
        let runtime = locked(&self.runtime);
        let runtime = runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the core has stopped"))?;
        let (port, tasks) = py
            .detach(|| {
                runtime.block_on(async move {
                    let address = state.config.listen.clone();
                    let listener = tokio::net::TcpListener::bind(&address)
                        .await
                        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
                    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                    let timeout = Duration::from_secs_f64(state.config.health_check_timeout_s);
                    let interval = Duration::from_secs_f64(state.config.health_check_interval_s);
                    // Pools with `dns:` endpoints: resolved once before the first health round,
                    // then again on their interval by a task each.
                    let mut tasks = Vec::new();
                    for pool in &state.pool_order {
                        let Some(discovery) = &pool.discovery else {
                            continue;
                        };
                        let resolver = discovery
                            .resolver()
                            .map_err(|e| format!("pool '{}': {e}", pool.name))?;
                        pool.resolve(&resolver).await;
                        let (pool, stop) = (pool.clone(), stop.clone());
                        tasks.push(tokio::spawn(upstream::discover(pool, resolver, stop)));
                    }
                    health::check_once(&state.health, &state.pools, &state.table, timeout).await;
                    let probes = {
                        let state = state.clone();
                        let mut stop = stop.clone();
                        tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    () = tokio::time::sleep(interval) => {}
                                    _ = stop.changed() => return,
                                }
                                health::check_once(
                                    &state.health,
                                    &state.pools,
                                    &state.table,
                                    timeout,
                                )
                                .await;
                            }
                        })
                    };
                    let exporter = {
                        let (state, stop) = (state.clone(), stop.clone());
                        tokio::spawn(async move { state.tracer.export(stop).await })
                    };
                    let acceptor = state.config.tls.as_ref().map(tls::acceptor).transpose()?;
                    let serving = tokio::spawn(edge::serve(state, listener, acceptor, stop));
                    tasks.extend([probes, serving, exporter]);
                    Ok::<_, String>((port, tasks))
                })
            })
            .map_err(PyOSError::new_err)?;
        locked(&self.tasks).extend(tasks);
        Ok(port)
    }

    /// Install the whole route table (a JSON list of routes); the next request sees it.
    fn set_routes(&self, routes: &str) -> PyResult<()> {
        let routes: config::RouteTable = serde_json::from_str(routes)
            .map_err(|e| PyValueError::new_err(format!("route table: {e}")))?;
        self.state
            .table
            .replace(routes, &self.state.pools)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The routes' cache policies (JSON: `{"default": policy, "routes": {model: policy}}`).
    fn set_cache_policies(&self, policies: &str) -> PyResult<()> {
        let policies = serde_json::from_str(policies)
            .map_err(|e| PyValueError::new_err(format!("cache policies: {e}")))?;
        self.state.cache.set_policies(policies);
        Ok(())
    }

    /// The routes' micro-batching (JSON: `{"default": settings, "routes": {model: settings}}`,
    /// null for off).
    fn set_batching_policies(&self, policies: &str) -> PyResult<()> {
        let policies = serde_json::from_str(policies)
            .map_err(|e| PyValueError::new_err(format!("batching policies: {e}")))?;
        self.state.batchers.set_policies(policies);
        Ok(())
    }

    /// Prefix affinity of the routes (a JSON object: route -> policy), replacing the last.
    fn set_affinity_policies(&self, policies: &str) -> PyResult<()> {
        let policies = serde_json::from_str(policies)
            .map_err(|e| PyValueError::new_err(format!("affinity policies: {e}")))?;
        self.state.affinities.store(Arc::new(policies));
        Ok(())
    }

    /// The response cache's counters and tiers (the admin API's CacheStats), as JSON.
    fn cache_stats(&self) -> String {
        self.state.cache.stats().to_string()
    }

    /// Drop the cached answers of `model` (and `variant`), or all of them when `model` is "":
    /// the count dropped. OSError when Redis could not be reached (the in-process ones are
    /// gone by then). The GIL is released meanwhile.
    fn invalidate_cache(&self, py: Python<'_>, model: &str, variant: &str) -> PyResult<u64> {
        let handle = self.handle()?;
        let cache = self.state.cache.clone();
        let (model, variant) = (model.to_owned(), variant.to_owned());
        py.detach(move || handle.block_on(async move { cache.invalidate(&model, &variant).await }))
            .map_err(PyOSError::new_err)
    }

    /// The route a request for `model` would take, as JSON `{"route": ...}`, discovering a
    /// zero-config one (and announcing it as an event) as a request would; `{"code": gRPC code,
    /// "message": ...}` when there is none. The GIL is released meanwhile.
    fn route(&self, py: Python<'_>, model: &str, timeout_s: f64) -> PyResult<String> {
        let handle = self.handle()?;
        let state = self.state.clone();
        let model = model.to_owned();
        let deadline =
            std::time::Instant::now() + Duration::from_secs_f64(timeout_s.clamp(0.0, 3600.0));
        let found = py.detach(move || {
            handle.block_on(async move { state.route(&model, Some(deadline)).await })
        });
        Ok(match found {
            Ok(route) => serde_json::json!({ "route": &*route }),
            Err(error) => {
                serde_json::json!({ "code": error.code() as i32, "message": error.message() })
            }
        }
        .to_string())
    }

    /// Every pool's repository index, as JSON: `[{"pool", "models": [{"name", "version",
    /// "state"}]}]`, or `{"pool", "error"}` for a pool that did not answer within `timeout_s`.
    fn repository_index(&self, py: Python<'_>, timeout_s: f64) -> PyResult<String> {
        let handle = self.handle()?;
        let state = self.state.clone();
        let deadline =
            std::time::Instant::now() + Duration::from_secs_f64(timeout_s.clamp(0.0, 3600.0));
        let indexes = py.detach(move || {
            handle.block_on(async move {
                crate::route::table::repository_indexes(&state.pool_order, Some(deadline)).await
            })
        });
        serde_json::to_string(&indexes).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// The core's route table, as JSON.
    fn routes(&self) -> PyResult<String> {
        let table: Vec<_> = self
            .state
            .table
            .snapshot()
            .values()
            .map(|r| (**r).clone())
            .collect();
        serde_json::to_string(&table).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Up to `max` events (JSON strings), waiting at most `timeout_s` for the first; the GIL is
    /// released meanwhile.
    fn next_events(&self, py: Python<'_>, max: usize, timeout_s: f64) -> Vec<String> {
        let events = self.state.events.clone();
        py.detach(move || events.take(max, Duration::from_secs_f64(timeout_s.max(0.0))))
    }

    /// Up to `max` observations (JSON records of ended RPCs), waiting at most `timeout_s` for the
    /// first; none when the stream is off. The GIL is released meanwhile.
    fn next_observations(&self, py: Python<'_>, max: usize, timeout_s: f64) -> Vec<String> {
        let Some(observations) = self.state.observations.clone() else {
            return Vec::new();
        };
        py.detach(move || observations.take(max, Duration::from_secs_f64(timeout_s.max(0.0))))
    }

    /// Health NOT_SERVING from now on; requests are still served until `stop`.
    fn drain(&self) {
        self.state.health.drain();
    }

    /// Stop accepting, give in-flight calls `grace_s` to finish, then end the runtime.
    fn stop(&self, py: Python<'_>, grace_s: f64) {
        let grace = Duration::from_secs_f64(grace_s.max(0.0));
        self.state.health.drain();
        self.stop.send_replace(Some(grace));
        let tasks: Vec<_> = locked(&self.tasks).drain(..).collect();
        let runtime = locked(&self.runtime).take();
        self.state.events.wake();
        if let Some(observations) = &self.state.observations {
            observations.wake();
        }
        if let Some(runtime) = runtime {
            py.detach(move || {
                runtime.block_on(async move {
                    for task in tasks {
                        let _ = tokio::time::timeout(grace + Duration::from_secs(1), task).await;
                    }
                });
                runtime.shutdown(Duration::from_secs(1));
            });
        }
    }

    /// Shadow comparison counters per (model, primary, shadow variant), as JSON; `model` "" for all.
    fn shadow_stats(&self, model: &str) -> String {
        serde_json::Value::Array(self.state.shadows.snapshot(model)).to_string()
    }

    /// A snapshot of the pools and the boundary's counters, as JSON.
    fn stats(&self) -> String {
        let threads = locked(&self.runtime)
            .as_ref()
            .map_or(0, CoreRuntime::workers);
        stats::CoreStats::of(&self.state, threads).to_json()
    }
}

/// The checks a route (JSON, the core's shape) must pass, given the pools' names: ValueError
/// with a message naming the key and the value when it fails. The one implementation of them,
/// for the control plane's config, admin API and route sync as for the core's own tables.
#[pyfunction]
fn check_route(route: &str, pools: Vec<String>) -> PyResult<()> {
    let route: gateway_router::Route =
        serde_json::from_str(route).map_err(|e| PyValueError::new_err(format!("routes: {e}")))?;
    let pools: Vec<&str> = pools.iter().map(String::as_str).collect();
    gateway_router::check_route(&route, &pools).map_err(|e| PyValueError::new_err(e.0))
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Core>()?;
    module.add_function(wrap_pyfunction!(check_route, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Bounds the core counts by, for the control plane's series (one definition of each).
    module.add(
        "LATENCY_BUCKETS",
        crate::primitives::histogram::LATENCY_BUCKETS.to_vec(),
    )?;
    module.add(
        "ABS_ERROR_BUCKETS",
        crate::shadow::ABS_ERROR_BUCKETS.to_vec(),
    )?;
    Ok(())
}
