//! The checks a route must pass before it is installed: the one implementation of them. The core
//! runs them on every table it is handed, and the control plane calls the same function through
//! the Python boundary (`gateway._core.check_route`) for the config, the admin API and Redis sync,
//! so an operator reads one set of messages, each naming the key path and the bad value.

use crate::route::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError(pub String);

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouteError {}

/// A string as Python's `repr` shows it (the messages read the same whichever side wrote them).
fn quoted(value: &str) -> String {
    let quote = if value.contains('\'') && !value.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(value.len() + 2);
    out.push(quote);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn listed<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let shown: Vec<String> = names.into_iter().map(quoted).collect();
    format!("[{}]", shown.join(", "))
}

/// `pools`: the names of the pools a variant may name (any order).
pub fn check_route(route: &Route, pools: &[&str]) -> Result<(), RouteError> {
    let key = format!("routes.{}", route.model);
    let fail = |message: String| Err(RouteError(message));
    if route.variants.is_empty() {
        return fail(format!(
            "{key}.variants: a route needs at least one variant"
        ));
    }
    let names: Vec<&str> = route.variants.iter().map(|v| &*v.name).collect();
    let mut known_pools = pools.to_vec();
    known_pools.sort_unstable();
    for (index, variant) in route.variants.iter().enumerate() {
        let at = format!("{key}.variants.{index}");
        if variant.name.is_empty() {
            return fail(format!("{at}.name: a variant needs a name"));
        }
        if names[..index].contains(&&*variant.name) {
            return fail(format!(
                "{at}.name: variant {} is defined twice",
                quoted(&variant.name)
            ));
        }
        if !pools.contains(&&*variant.pool) {
            return fail(format!(
                "{at}.pool: unknown pool {} (pools: {})",
                quoted(&variant.pool),
                listed(known_pools.iter().copied())
            ));
        }
        if !variant.version.is_empty() && !variant.version.bytes().all(|b| b.is_ascii_digit()) {
            return fail(format!(
                "{at}.version: a model version is a positive integer, got {}",
                quoted(&variant.version)
            ));
        }
    }
    if route.variants.iter().all(|v| v.weight == 0) {
        return fail(format!(
            "{key}.variants: all weights are 0, so no request could be served"
        ));
    }
    let variants = || listed(names.iter().copied());
    for (index, rule) in route.rules.iter().enumerate() {
        let at = format!("{key}.match.{index}");
        if !names.contains(&rule.variant.as_str()) {
            return fail(format!(
                "{at}.variant: unknown variant {} (variants: {})",
                quoted(&rule.variant),
                variants()
            ));
        }
        if rule.header.is_empty() || rule.header != rule.header.to_lowercase() {
            return fail(format!(
                "{at}.header: a lower-case metadata key is needed, got {}",
                quoted(&rule.header)
            ));
        }
    }
    for (index, shadow) in route.shadows.iter().enumerate() {
        let at = format!("{key}.shadows.{index}");
        if !names.contains(&shadow.variant.as_str()) {
            return fail(format!(
                "{at}.variant: unknown variant {} (variants: {})",
                quoted(&shadow.variant),
                variants()
            ));
        }
        if !(0.0..=1.0).contains(&shadow.fraction) {
            return fail(format!(
                "{at}.fraction: must be within [0, 1], got {:?}",
                shadow.fraction
            ));
        }
        if shadow.max_inflight < 1 {
            return fail(format!(
                "{at}.max_inflight: must be >= 1, got {}",
                shadow.max_inflight
            ));
        }
    }
    if let Some(header) = &route.sticky_header {
        if *header != header.to_lowercase() {
            return fail(format!(
                "{key}.sticky_header: metadata keys are lower-case, got {}",
                quoted(header)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{MatchOp, MatchRule, ShadowPolicy, Variant};

    fn route() -> Route {
        let variant = |name: &str, weight| Variant {
            name: name.into(),
            pool: "gpu".into(),
            model: "m".into(),
            version: "1".into(),
            weight,
        };
        Route {
            model: "m".into(),
            variants: vec![variant("v1", 90), variant("v2", 10)],
            rules: vec![MatchRule {
                header: "x-tier".into(),
                op: MatchOp::Equals,
                values: vec!["gold".into()],
                variant: "v2".into(),
            }],
            sticky_header: Some("x-user".into()),
            shadows: vec![ShadowPolicy {
                variant: "v2".into(),
                fraction: 0.5,
                max_inflight: 4,
            }],
            discovered: false,
        }
    }

    fn error(change: impl FnOnce(&mut Route)) -> String {
        let mut route = route();
        change(&mut route);
        check_route(&route, &["gpu", "cpu"]).unwrap_err().0
    }

    #[test]
    fn a_good_route_passes_and_each_fault_names_its_key_and_value() {
        assert_eq!(check_route(&route(), &["gpu"]), Ok(()));
        assert_eq!(
            error(|r| r.variants[1].pool = "tpu".into()),
            "routes.m.variants.1.pool: unknown pool 'tpu' (pools: ['cpu', 'gpu'])"
        );
        assert_eq!(
            error(|r| r.variants[1].name = "v1".into()),
            "routes.m.variants.1.name: variant 'v1' is defined twice"
        );
        assert_eq!(
            error(|r| r.variants[0].version = "v1".into()),
            "routes.m.variants.0.version: a model version is a positive integer, got 'v1'"
        );
        assert_eq!(
            error(|r| r.variants.iter_mut().for_each(|v| v.weight = 0)),
            "routes.m.variants: all weights are 0, so no request could be served"
        );
        assert_eq!(
            error(|r| r.rules[0].variant = "v3".into()),
            "routes.m.match.0.variant: unknown variant 'v3' (variants: ['v1', 'v2'])"
        );
        assert_eq!(
            error(|r| r.rules[0].header = "X-Tier".into()),
            "routes.m.match.0.header: a lower-case metadata key is needed, got 'X-Tier'"
        );
        assert_eq!(
            error(|r| r.shadows[0].fraction = 1.5),
            "routes.m.shadows.0.fraction: must be within [0, 1], got 1.5"
        );
        assert_eq!(
            error(|r| r.shadows[0].max_inflight = 0),
            "routes.m.shadows.0.max_inflight: must be >= 1, got 0"
        );
        assert_eq!(
            error(|r| r.sticky_header = Some("X-User".into())),
            "routes.m.sticky_header: metadata keys are lower-case, got 'X-User'"
        );
        assert_eq!(
            error(|r| r.variants.clear()),
            "routes.m.variants: a route needs at least one variant"
        );
    }

    #[test]
    fn values_are_quoted_as_python_shows_them() {
        assert_eq!(quoted("it's"), "\"it's\"");
        assert_eq!(quoted("a\\b"), "'a\\\\b'");
    }
}
