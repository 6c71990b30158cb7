"""The bench's side-by-side cost rows: the gateway's and nginx's CPU a request, paired per workload
from the perf_analyzer rows of the same run."""

from __future__ import annotations

from loadtest.proxies import forward_cpu_rows


def test_cpu_a_request_is_paired_per_workload_measured_for_both() -> None:
    rows: list[dict[str, object]] = [
        {"scenario": "gateway: identity c=16 (perf_analyzer)", "gateway_cpu_us_per_request": 90.0},
        {"scenario": "nginx grpc_pass: identity c=16 (perf_analyzer)", "gateway_cpu_us_per_request": 100.0},
        {"scenario": "gateway: identity c=1 (perf_analyzer)", "gateway_cpu_us_per_request": 300.0},
        {"scenario": "nginx grpc_pass: image 602KB c=16 (perf_analyzer)", "gateway_cpu_us_per_request": 500.0},
    ]
    assert forward_cpu_rows(rows) == [
        {
            "scenario": "bare forward, CPU a request: identity c=16 (perf_analyzer)",
            "baseline": "nginx grpc_pass",
            "gateway_cpu_us_per_request": 90.0,
            "nginx_cpu_us_per_request": 100.0,
            "cpu_ratio": 0.9,
        }
    ]
