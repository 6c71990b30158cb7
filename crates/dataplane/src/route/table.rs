//! The live route table, swapped whole: a request reads one snapshot and finishes on it; the next
//! request sees the control plane's latest swap. Models with no route get one discovered from
//! the default pool (zero-config), announced to the control plane through the event queue.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use gateway_router::{check_route, Route, RouteError, Variant};
use hashbrown::HashMap;
use prost::Message;

use crate::primitives::events::Events;
use crate::primitives::flights::Flights;
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::Code;
use crate::protocol::messages::{
    ModelMetadataResponse, NameVersion, RepositoryIndexRequest, RepositoryIndexResponse,
};
use crate::upstream::Pool;

pub type Routes = HashMap<String, Arc<Route>>;

pub struct Table {
    routes: ArcSwap<Routes>,
    flights: Flights<String, Arc<Route>>,
}

/// Variant name of a model the server does not version (any v2 server may leave versions out).
pub const UNVERSIONED: &str = "default";

impl Table {
    pub fn new() -> Table {
        Table {
            routes: ArcSwap::from_pointee(HashMap::new()),
            flights: Flights::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Install the control plane's whole table. Routes the core discovered that the table does
    /// not name yet are kept (the control plane learns of them through the event queue).
    pub fn replace(
        &self,
        routes: Vec<Route>,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Result<(), RouteError> {
        let names: Vec<&str> = pools.keys().map(String::as_str).collect();
        for route in &routes {
            check_route(route, &names)?;
        }
        let mut next: Routes = routes
            .into_iter()
            .map(|r| (r.model.to_string(), Arc::new(r)))
            .collect();
        for (model, route) in self.routes.load().iter() {
            if route.discovered && !next.contains_key(model) {
                next.insert(model.clone(), route.clone());
            }
        }
        self.routes.store(Arc::new(next));
        Ok(())
    }

    fn install_discovered(&self, route: Route) -> Arc<Route> {
        let route = Arc::new(route);
        let mut chosen = route.clone();
        self.routes.rcu(|current| {
            let mut next = (**current).clone();
            // An operator's route for the model, installed meanwhile, wins the race.
            chosen = next
                .entry(route.model.to_string())
                .or_insert_with(|| route.clone())
                .clone();
            next
        });
        chosen
    }

    pub async fn route(
        &self,
        model: &str,
        default_pool: Option<&Arc<Pool>>,
        events: &Arc<Events>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Route>, GatewayError> {
        if model.is_empty() {
            return Err(GatewayError::InvalidRequest(
                "the request names no model".into(),
            ));
        }
        if let Some(route) = self.routes.load().get(model) {
            return Ok(route.clone());
        }
        let Some(pool) = default_pool else {
            return Err(GatewayError::ModelNotFound(format!(
                "unknown model '{model}': no route serves it and there is no default pool"
            )));
        };
        let (pool, name) = (pool.clone(), model.to_owned());
        let route = self
            .flights
            .run(model.to_owned(), move || discover(pool, name, deadline))
            .await
            .0?;
        // Every waiter of the flight comes here with the same route: the first installs it and
        // tells the control plane; the others find it in the table.
        if let Some(route) = self.routes.load().get(model) {
            return Ok(route.clone());
        }
        let installed = self.install_discovered((*route).clone());
        if installed.discovered {
            if let Ok(json) = serde_json::to_string(&*installed) {
                events.push(format!("{{\"kind\":\"discovered\",\"route\":{json}}}"));
            }
        }
        Ok(installed)
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

/// A state string that says the version cannot serve. Servers other than Triton may ignore the
/// index's `ready` filter and spell states their own way ("Ready", "AVAILABLE", "Loading"...):
/// the ones that clearly mean "not serving" are left out, any other (or none) is taken as ready.
pub fn not_ready(state: &str) -> bool {
    let state = state.to_ascii_lowercase();
    [
        "unavailable",
        "unloading",
        "unloaded",
        "loading",
        "failed",
        "error",
        "not_ready",
        "not ready",
    ]
    .iter()
    .any(|word| state.starts_with(word))
}

/// A pool's repository index (`ready`: its ready models only; a malformed answer reads as empty).
async fn repository_index(
    pool: &Arc<Pool>,
    ready: bool,
    deadline: Option<Instant>,
) -> Result<RepositoryIndexResponse, GatewayError> {
    let request = RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    }
    .encode_to_vec();
    let answer = pool
        .call("RepositoryIndex", request.into(), deadline)
        .await?;
    Ok(RepositoryIndexResponse::decode(answer).unwrap_or_default())
}

/// Every pool's repository index as JSON (`{"pool", "models": [{"name", "version", "state"}]}`),
/// or why a pool gave none (`{"pool", "error"}`): what `rollouts.on_new_version` looks at.
pub async fn repository_indexes(
    pools: &[Arc<Pool>],
    deadline: Option<Instant>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::with_capacity(pools.len());
    for pool in pools {
        out.push(match repository_index(pool, false, deadline).await {
            Ok(index) => {
                let models: Vec<_> = index
                    .models
                    .iter()
                    .map(|m| serde_json::json!({"name": m.name, "version": m.version, "state": m.state}))
                    .collect();
                serde_json::json!({"pool": pool.name, "models": models})
            }
            Err(error) => serde_json::json!({"pool": pool.name, "error": error.message()}),
        });
    }
    out
}

/// A route from the pool's ready versions of `model`, all weight on the latest; for a server
/// without a repository index, from the model's metadata.
async fn discover(
    pool: Arc<Pool>,
    model: String,
    deadline: Option<Instant>,
) -> Result<Arc<Route>, GatewayError> {
    let versions = match repository_index(&pool, true, deadline).await {
        Ok(index) => {
            let listed: Vec<&str> = index
                .models
                .iter()
                .filter(|m| m.name == model && !not_ready(&m.state))
                .map(|m| m.version.as_str())
                .collect();
            if listed.is_empty() {
                None
            } else {
                Some(listed.into_iter().map(str::to_owned).collect::<Vec<_>>())
            }
        }
        Err(GatewayError::Upstream {
            code: Code::Unimplemented,
            ..
        }) => {
            let request = NameVersion {
                name: model.clone(),
                version: String::new(),
            }
            .encode_to_vec();
            match pool.call("ModelMetadata", request.into(), deadline).await {
                Ok(answer) => Some(
                    ModelMetadataResponse::decode(answer)
                        .unwrap_or_default()
                        .versions,
                ),
                Err(GatewayError::Upstream {
                    code: Code::NotFound,
                    ..
                }) => None,
                Err(error) => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    let Some(versions) = versions else {
        return Err(GatewayError::ModelNotFound(format!(
            "unknown model '{model}': pool '{}' serves no ready version of it",
            pool.name
        )));
    };
    let mut numbered: Vec<u64> = versions.iter().filter_map(|v| v.parse().ok()).collect();
    numbered.sort_unstable();
    numbered.dedup();
    let variants = if numbered.is_empty() {
        vec![Variant {
            name: UNVERSIONED.into(),
            pool: pool.name.as_str().into(),
            model: model.as_str().into(),
            version: "".into(),
            weight: 100,
        }]
    } else {
        let latest = *numbered.last().unwrap_or(&0);
        numbered
            .iter()
            .map(|v| Variant {
                name: v.to_string().into(),
                pool: pool.name.as_str().into(),
                model: model.as_str().into(),
                version: v.to_string().into(),
                weight: if *v == latest { 100 } else { 0 },
            })
            .collect()
    };
    Ok(Arc::new(Route {
        model: model.into(),
        variants,
        rules: vec![],
        sticky_header: None,
        shadows: vec![],
        discovered: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::not_ready;

    #[test]
    fn states_that_mean_not_serving_in_any_spelling() {
        for state in [
            "UNAVAILABLE",
            "Unavailable",
            "LOADING",
            "unloading",
            "Failed",
            "NOT_READY",
        ] {
            assert!(not_ready(state), "{state}");
        }
        for state in ["", "READY", "Ready", "AVAILABLE", "loaded", "serving"] {
            assert!(!not_ready(state), "{state}");
        }
    }
}
