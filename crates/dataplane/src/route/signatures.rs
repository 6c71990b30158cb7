//! Model signatures fetched from the pool that serves each model, cached with a TTL. Concurrent
//! misses share one ModelMetadata + ModelConfig pair. A server without ModelConfig (any v2
//! server may leave it out) is validated from ModelMetadata alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use prost::Message;

use crate::primitives::borrowed::Borrowed;
use crate::primitives::flights::Flights;
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::Code;
use crate::protocol::messages::{ModelConfigResponse, ModelMetadataResponse, NameVersion};
use crate::upstream::Pool;
use crate::validate::Signature;

type Key = [String; 3]; // pool, upstream model, version

pub struct Signatures {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Arc<Signature>)>>,
    flights: Flights<Key, Arc<Signature>>,
}

impl Signatures {
    pub fn new(ttl_s: f64) -> Signatures {
        Signatures {
            ttl: Duration::from_secs_f64(ttl_s.max(0.0)),
            entries: Mutex::new(HashMap::new()),
            flights: Flights::default(),
        }
    }

    pub async fn get(
        &self,
        pool: &Arc<Pool>,
        model: &str,
        version: &str,
        deadline: Option<Instant>,
    ) -> Result<Arc<Signature>, GatewayError> {
        let key = Borrowed([pool.name.as_str(), model, version]);
        if let Some((expiry, signature)) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if *expiry > Instant::now() {
                return Ok(signature.clone());
            }
        }
        let (pool, model, version) = (pool.clone(), model.to_owned(), version.to_owned());
        let signature = self
            .flights
            .run(key.owned(), move || fetch(pool, model, version, deadline))
            .await
            .0?;
        let expiry = Instant::now() + self.ttl;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.owned(), (expiry, signature.clone()));
        Ok(signature)
    }
}

fn not_found(error: GatewayError, pool: &str) -> GatewayError {
    match error {
        GatewayError::Upstream {
            code: Code::NotFound,
            message,
        } => GatewayError::ModelNotFound(format!("{message} (pool '{pool}')")),
        other => other,
    }
}

async fn fetch(
    pool: Arc<Pool>,
    model: String,
    version: String,
    deadline: Option<Instant>,
) -> Result<Arc<Signature>, GatewayError> {
    let request = NameVersion {
        name: model,
        version,
    }
    .encode_to_vec();
    let (metadata, config) = tokio::join!(
        pool.call("ModelMetadata", request.clone().into(), deadline),
        pool.call("ModelConfig", request.into(), deadline),
    );
    let metadata = metadata.map_err(|e| not_found(e, &pool.name))?;
    let metadata = ModelMetadataResponse::decode(metadata).map_err(|e| GatewayError::Upstream {
        code: Code::Internal,
        message: format!(
            "pool '{}' answered ModelMetadata with a malformed message: {e}",
            pool.name
        ),
    })?;
    let config = match config {
        Ok(bytes) => ModelConfigResponse::decode(bytes)
            .ok()
            .and_then(|r| r.config),
        // Not every v2 server has ModelConfig: validate from the metadata alone.
        Err(GatewayError::Upstream {
            code: Code::Unimplemented,
            ..
        }) => None,
        Err(error) => return Err(not_found(error, &pool.name)),
    };
    Ok(Arc::new(Signature::new(&metadata, config.as_ref())))
}
