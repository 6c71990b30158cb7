//! The admission settings: the `admission` section (priority classes, tenants) and a pool's
//! adaptive limit, and how a request's priority is read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::policy::TenantLimits;
use crate::protocol::messages::{ModelInferRequest, ParameterChoice};

/// The `admission` section: priority classes and tenants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AdmissionConfig {
    pub priority_levels: usize,
    pub default_priority: usize,
    pub priority_header: String,
    pub tenant_header: String,
    /// Named tenants' weights and caps; any other tenant has `default_tenant`'s.
    pub tenants: HashMap<String, TenantLimits>,
    pub default_tenant: TenantLimits,
    /// Tenants counted apart in the statistics (named ones first); the rest as "other".
    pub max_tenants: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            priority_levels: 3,
            default_priority: 2,
            priority_header: "x-priority".into(),
            tenant_header: "x-tenant".into(),
            tenants: HashMap::new(),
            default_tenant: TenantLimits::default(),
            max_tenants: 100,
        }
    }
}

impl AdmissionConfig {
    /// From the priority header, else the request's `priority` parameter (Triton's: 1 is the
    /// highest, 0 the default); out of range values are clamped to the configured levels.
    pub fn priority(&self, header: Option<&str>, request: &ModelInferRequest) -> usize {
        let value: i64 = match header {
            Some(given) => given.trim().parse().unwrap_or(0),
            None => match request
                .parameters
                .get("priority")
                .and_then(|p| p.choice.as_ref())
            {
                Some(ParameterChoice::Int64(v)) => *v,
                Some(ParameterChoice::Uint64(v)) => i64::try_from(*v).unwrap_or(i64::MAX),
                Some(ParameterChoice::Double(v)) => *v as i64,
                Some(ParameterChoice::String(v)) => v.trim().parse().unwrap_or(0),
                _ => 0,
            },
        };
        if value <= 0 {
            self.default_priority
        } else {
            usize::try_from(value).map_or(self.priority_levels, |v| v.min(self.priority_levels))
        }
    }
}

/// A pool's limits (`pools.*.max_inflight`, `max_queue`, `adaptive`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdaptiveConfig {
    pub min_limit: usize,
    pub max_limit: usize,
    pub window: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_come_from_the_header_then_the_parameter() {
        let config = AdmissionConfig::default();
        let mut request = ModelInferRequest::default();
        assert_eq!(config.priority(None, &request), 2);
        assert_eq!(config.priority(Some("1"), &request), 1);
        assert_eq!(config.priority(Some("9"), &request), 3);
        assert_eq!(config.priority(Some("x"), &request), 2);
        request.parameters.insert(
            "priority".into(),
            crate::protocol::messages::InferParameter {
                choice: Some(ParameterChoice::Uint64(1)),
            },
        );
        assert_eq!(config.priority(None, &request), 1);
    }
}
