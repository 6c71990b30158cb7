//! Properties of the routing decision: weight shares, sticky minimal movement, rule order.

use gateway_router::{
    decide, sticky_variant, weighted, MatchOp, MatchRule, Reason, Route, Variant,
};
use proptest::prelude::*;

fn route(weights: &[u32]) -> Route {
    Route {
        model: "m".into(),
        variants: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Variant {
                name: format!("v{i}").into(),
                pool: "p".into(),
                model: "m".into(),
                version: "".into(),
                weight: *w,
            })
            .collect(),
        rules: vec![],
        sticky_header: None,
        shadows: vec![],
        discovered: false,
    }
}

fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..100, 1..5).prop_filter("some weight", |w| w.iter().any(|x| *x > 0))
}

proptest! {
    /// Evenly spaced draws land on each variant in proportion to its weight (within one draw).
    #[test]
    fn weighted_shares_follow_the_weights(weights in weights()) {
        let route = route(&weights);
        let total: u32 = weights.iter().sum();
        let draws = 10_000u32;
        let mut counts = vec![0u32; weights.len()];
        for i in 0..draws {
            let point = (f64::from(i) + 0.5) / f64::from(draws);
            let chosen = weighted(&route, point);
            let index = route.variants.iter().position(|v| v.name == chosen.name).unwrap();
            counts[index] += 1;
        }
        for (index, weight) in weights.iter().enumerate() {
            let expected = f64::from(draws) * f64::from(*weight) / f64::from(total);
            prop_assert!((f64::from(counts[index]) - expected).abs() <= 1.0,
                "variant {index}: {} draws for weight {weight} of {total}", counts[index]);
        }
    }

    /// Never a variant of weight 0, whatever the draw.
    #[test]
    fn weight_zero_is_never_chosen(weights in weights(), point in 0.0f64..1.0, key in "[a-z0-9]{1,12}") {
        let route = route(&weights);
        prop_assert!(weighted(&route, point).weight > 0);
        prop_assert!(sticky_variant(&route, &key).weight > 0);
    }

    /// Raising one variant's weight moves keys only onto that variant; nothing moves elsewhere.
    #[test]
    fn sticky_keys_move_only_to_the_variant_that_gained(weights in weights(), gainer in 0usize..5, extra in 1u32..50) {
        let before = route(&weights);
        let gainer = gainer % weights.len();
        let mut raised = weights.clone();
        raised[gainer] += extra;
        let after = route(&raised);
        for i in 0..300 {
            let key = format!("user-{i}");
            let old = &sticky_variant(&before, &key).name;
            let new = &sticky_variant(&after, &key).name;
            prop_assert!(old == new || *new == after.variants[gainer].name, "{key}: {old} -> {new}");
        }
    }
}

#[test]
fn sticky_shares_follow_the_weights() {
    let route = route(&[30, 70]);
    let on_second = (0..20_000)
        .filter(|i| sticky_variant(&route, &format!("k{i}")).name.as_ref() == "v1")
        .count();
    let share = on_second as f64 / 20_000.0;
    assert!((share - 0.7).abs() < 0.02, "share {share}");
}

#[test]
fn sticky_hash_is_stable_across_releases() {
    // hashlib.blake2b(b"abc", digest_size=8).digest() read big-endian: the hash earlier releases
    // (the Python data plane) assigned sticky keys with, so an upgrade moves no key.
    assert_eq!(gateway_router::blake2b_64(b"abc"), 0xd8bb14d833d59559);
}

#[test]
fn the_first_matching_rule_wins_over_sticky_and_weights() {
    let mut route = route(&[100, 0, 0]);
    route.sticky_header = Some("x-user".into());
    route.rules = vec![
        MatchRule {
            header: "x-tier".into(),
            op: MatchOp::Prefix,
            values: vec!["gold".into()],
            variant: "v1".into(),
        },
        MatchRule {
            header: "x-tier".into(),
            op: MatchOp::OneOf,
            values: vec!["gold-plus".into()],
            variant: "v2".into(),
        },
    ];
    let metadata = [("x-tier", "gold-plus"), ("x-user", "u1")];
    let header = |name: &str| metadata.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let decision = decide(&route, header, "", || 0.5);
    assert_eq!(decision.primary.name.as_ref(), "v1");
    assert_eq!(decision.reason, Reason::Match("x-tier".into()));
    let none = |_: &str| None;
    assert_eq!(decide(&route, none, "", || 0.5).reason, Reason::Weighted);
    let sticky = |name: &str| (name == "x-user").then_some("u1");
    assert_eq!(
        decide(&route, sticky, "", || 0.5).reason,
        Reason::Sticky("x-user".into())
    );
}

#[test]
fn a_requested_version_no_variant_names_goes_to_the_heaviest_pool() {
    let route = route(&[10, 90]);
    let decision = decide(&route, |_| None, "7", || 0.0);
    assert_eq!(decision.reason, Reason::RequestedVersion);
    assert_eq!(decision.primary.name.as_ref(), "7");
    assert_eq!(decision.primary.version.as_ref(), "7");
    assert_eq!(decision.primary.weight, 0);
}
