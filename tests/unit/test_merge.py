"""Server-wide answers from several pools are merged with each model listed once."""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

from gateway.dataplane import _dedupe


def _index(*names: str) -> bytes:
    models = [pb.RepositoryIndexResponse.ModelIndex(name=name, version="1") for name in names]
    return pb.RepositoryIndexResponse(models=models).SerializeToString()


def test_repository_indexes_merge_without_duplicates() -> None:
    merged = pb.RepositoryIndexResponse.FromString(_dedupe("RepositoryIndex", _index("a", "b") + _index("b", "c")))
    assert [m.name for m in merged.models] == ["a", "b", "c"]


def test_statistics_merge_and_other_answers_pass_through() -> None:
    stats = pb.ModelStatisticsResponse(model_stats=[pb.ModelStatistics(name="a", version="1")]).SerializeToString()
    merged = pb.ModelStatisticsResponse.FromString(_dedupe("ModelStatistics", stats + stats))
    assert len(merged.model_stats) == 1
    assert _dedupe("LogSettings", b"raw") == b"raw"
