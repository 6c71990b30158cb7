"""Batch prediction on Ray Data (a local Ray cluster of this machine): `map_batches` with
`GatewayPredictor` through a real gateway to a real Triton, a few thousand rows, every row's
prediction back beside it (a row that fails, fails alone: `calls.several`, unit-tested)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import ray  # the `ray` extra, which the Makefile installs

from gateway.batch.on_ray import GatewayPredictor
from gateway.local.processes import GatewayProcess

# Ray Data reads deprecated settings of its own on every plan (not ours to mend).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_a_dataset_goes_through_the_gateway_in_batches(local_ray: None, gateway: GatewayProcess) -> None:
    rows = [{"INPUT0": np.array([float(i), float(i) * 2], np.float32), "key": i} for i in range(3000)]
    dataset = ray.data.from_items(rows)
    predicted = dataset.map_batches(
        GatewayPredictor, fn_constructor_kwargs={"model": "identity_batched", "target": gateway.address,
                                                 "inputs": ["INPUT0"]},
        concurrency=1, batch_size=500,
    ).take_all()  # fmt: skip
    assert len(predicted) == 3000
    by_key = {row["key"]: row for row in predicted}
    assert sorted(by_key) == list(range(3000))
    for key in (0, 1, 1234, 2999):
        row = by_key[key]
        assert row["status"] == "OK" and row["message"] == ""
        assert np.array_equal(np.asarray(row["OUTPUT0"], np.float32), np.array([key, key * 2], np.float32))


def test_a_block_without_the_models_input_is_refused_by_name(local_ray: None, gateway: GatewayProcess) -> None:
    rows = [{"pixels": np.array([1.0, 2.0], np.float32)}]
    with pytest.raises(ray.exceptions.RayTaskError, match=r"the block has no column \['INPUT0'\]"):
        ray.data.from_items(rows).map_batches(
            GatewayPredictor, fn_constructor_kwargs={"model": "identity_batched", "target": gateway.address},
            concurrency=1, batch_size=1,
        ).take_all()  # fmt: skip
