"""Cache hits folded into Triton's ModelStatistics, as Triton's own response cache counts them."""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

from cache import HitCounter, ModelHits, fold_hits


def _statistics(*entries: tuple[str, str]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    for name, version in entries:
        entry = response.model_stats.add(name=name, version=version, inference_count=10, execution_count=10)
        entry.inference_stats.success.count = 10
        entry.inference_stats.queue.count = 10
    return response


def test_hits_count_as_successful_queued_inferences_that_hit_the_cache_without_executing() -> None:
    hits = ModelHits()
    for _ in range(3):
        hits.record("m", "2", rows=4, ns=1_000)
    response = _statistics(("m", "1"), ("m", "2"))
    assert fold_hits(response, hits.snapshot())
    untouched, entry = response.model_stats
    assert (entry.inference_count, entry.execution_count) == (22, 10)  # 3 requests of 4 rows each
    stats = entry.inference_stats
    assert (stats.success.count, stats.queue.count, stats.cache_hit.count, stats.cache_hit.ns) == (13, 13, 3, 3_000)
    assert untouched.inference_count == 10 and untouched.inference_stats.cache_hit.count == 0


def test_hits_without_a_version_go_to_the_latest_listed_version() -> None:
    response = _statistics(("m", "9"), ("m", "10"), ("other", "1"))
    assert fold_hits(response, {("m", ""): HitCounter(requests=2, inferences=2, ns=5)})
    assert [e.inference_stats.cache_hit.count for e in response.model_stats] == [0, 2, 0]


def test_hits_of_models_not_in_the_answer_change_nothing() -> None:
    response = _statistics(("m", "1"))
    assert not fold_hits(response, {("absent", "1"): HitCounter(1, 1, 1), ("m", "1"): HitCounter()})
    assert response.model_stats[0].inference_stats.cache_hit.count == 0
