"""Windows summed over replicas: each replica's change since the window's start."""

from __future__ import annotations

from gateway.control.shadow_stats import ShadowCounters
from gateway.rollout.cluster import Snapshot, window
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
