"""Windows summed over replicas: each replica's change since the window's start."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from gateway.rollout.cluster import Snapshot, add_shadows, window
from gateway.rollout.shadow_stats import ShadowCounters, ShadowCountersError
from gateway.rollout.totals import VariantTotals

KEY = ("m", "2")


def snap(ok: int, compared: int = 0) -> Snapshot:
    shadows = {KEY: ShadowCounters(compared=compared)} if compared else {}
    return Snapshot({KEY: VariantTotals({"OK": ok}, count=ok)}, shadows)


def test_each_replica_counts_its_change_and_newcomers_count_from_zero() -> None:
    marks = {"a": snap(100, compared=10), "b": snap(50)}
    now = {"a": snap(130, compared=25), "b": snap(60), "c": snap(5)}
    totals, shadow = window(now, marks, KEY)
    assert totals.codes == {"OK": 30 + 10 + 5} and shadow.compared == 15


def test_a_restarted_replica_counts_its_new_totals_and_a_departed_one_nothing() -> None:
    totals, _ = window({"a": snap(7)}, {"a": snap(100), "gone": snap(40)}, KEY)
    assert totals.codes == {"OK": 7}


def test_snapshots_travel_as_json() -> None:
    original = snap(3, compared=2)
    assert Snapshot.from_json(original.to_json()) == original


def test_shadow_counters_are_checked_at_the_boundary() -> None:
    """A null or infinite error (what JSON made of the core's infinity) is refused with the field's
    name instead of crashing a max() later; an older replica's counters without `mismatches` read."""
    good = asdict(ShadowCounters(compared=4, mismatches=1, max_rel_error=1.0))
    assert ShadowCounters.from_dict(good) == ShadowCounters(compared=4, mismatches=1, max_rel_error=1.0)
    older = {k: v for k, v in good.items() if k != "mismatches"}
    assert ShadowCounters.from_dict(older).mismatches == 0
    for field, bad in [("max_rel_error", None), ("max_abs_error", float("inf")), ("compared", -1),
                       ("compared", 1.5), ("abs_error_buckets", [1, 2])]:  # fmt: skip
        with pytest.raises(ShadowCountersError, match=field):
            ShadowCounters.from_dict(good | {field: bad})


def test_shadow_counters_add_up_with_their_mismatches() -> None:
    a = ShadowCounters(compared=3, mismatches=1, max_rel_error=0.5)
    b = ShadowCounters(compared=2, mismatches=2, max_rel_error=2.0)
    total = add_shadows(a, b)
    assert (total.compared, total.mismatches, total.max_rel_error) == (5, 3, 2.0)
