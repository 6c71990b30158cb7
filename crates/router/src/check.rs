//! The checks a route must pass before the core installs it. The control plane runs the same
//! checks (with the same messages) before it hands a table over; these keep the core's own
//! invariants (a variant to pick, a weight to pick it by) whatever it is given.

use crate::route::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError(pub String);

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouteError {}

pub fn check_route<'a>(route: &Route, pools: impl Fn(&str) -> bool + 'a) -> Result<(), RouteError> {
    let key = format!("routes.{}", route.model);
    if route.variants.is_empty() {
        return Err(RouteError(format!(
            "{key}.variants: a route needs at least one variant"
        )));
    }
    for (index, variant) in route.variants.iter().enumerate() {
        if !pools(&variant.pool) {
            return Err(RouteError(format!(
                "{key}.variants.{index}.pool: unknown pool {:?}",
                variant.pool
            )));
        }
    }
    if route.variants.iter().all(|v| v.weight == 0) {
        return Err(RouteError(format!(
            "{key}.variants: all weights are 0, so no request could be served"
        )));
    }
    for (index, rule) in route.rules.iter().enumerate() {
        if route.variant(&rule.variant).is_none() {
            return Err(RouteError(format!(
                "{key}.match.{index}.variant: unknown variant {:?}",
                rule.variant
            )));
        }
    }
    Ok(())
}
