"""The bench's side-by-side cost rows: the gateway's and nginx's CPU a request, measured in turn
in front of the same Triton."""

from __future__ import annotations

from loadtest.proxies import cpu_row, turns


def test_the_proxies_take_turns_so_that_a_drift_falls_on_both() -> None:
    assert turns(1) == ["gateway", "nginx"]
    assert turns(3) == ["gateway", "nginx", "nginx", "gateway", "gateway", "nginx"]


def test_cpu_a_request_divides_each_proxys_cpu_by_its_own_requests() -> None:
    row = cpu_row("identity c=16", {"gateway": (0.9, 10_000), "nginx": (1.5, 15_000)})
    assert row == {
        "scenario": "bare forward, CPU a request: identity c=16 (perf_analyzer)",
        "baseline": "nginx grpc_pass",
        "gateway_cpu_us_per_request": 90.0,
        "nginx_cpu_us_per_request": 100.0,
        "cpu_ratio": 0.9,
    }
