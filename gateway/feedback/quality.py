"""What a variant predicted and how it fared against ground truth, as running counters: a
window is the difference of two totals, as with the request totals rollouts judge.

Pure: predictions and joined outcomes in, counters out. The counters are a flat mapping of
names to numbers (`prediction_fields`, `outcome_fields`), so that memory and a Redis hash hold
them the same way; `QualityTotals` reads them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LAG_BUCKETS", "Outcome", "Prediction", "QualityTotals", "outcome_fields", "prediction_fields"]

# Label lag (seconds from prediction to the outcome being observed): 1 s to a week.
LAG_BUCKETS: tuple[float, ...] = (1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 7 * 86400, math.inf)
_FLOATS = frozenset({"top_sum", "abs_error", "squared_error", "reward"})


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the gateway remembers of one answer, until its outcome comes (or its TTL passes)."""

    key: str  # the caller's ModelInferRequest.id, else the gateway's x-request-id
    model: str
    variant: str
    version: str
    time: float
    cls: int | None = None
    top: float | None = None
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.model, "variant": self.variant, "version": self.version,
                "time": self.time, "cls": self.cls, "top": self.top, "value": self.value}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(data["key"], data["model"], data["variant"], data["version"], data["time"], data.get("cls"),
                   data.get("top"), data.get("value"))  # fmt: skip

    @classmethod
    def from_observation(cls, observation: Mapping[str, Any]) -> Prediction | None:
        """The core's observation of an ended RPC, when it carries a prediction."""
        summary = observation.get("prediction")
        if not summary or observation.get("code") != "OK":
            return None
        return cls(observation.get("id") or observation["request_id"], observation["model"], observation["variant"],
                   observation["version"], observation["time"], summary.get("class"), summary.get("top"),
                   summary.get("value"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    """Ground truth for one request: a class label, a numeric value or a reward."""

    key: str
    label: int | None = None
    value: float | None = None
    reward: float | None = None
    observed: float = 0.0  # unix seconds; 0: when reported


def prediction_fields(prediction: Prediction) -> dict[str, float]:
    """The counters one prediction adds to its variant's totals."""
    fields: dict[str, float] = {"predictions": 1}
    if prediction.top is not None:
        fields |= {"top_sum": prediction.top, "with_top": 1}
    if prediction.cls is not None:
        fields[f"class:{prediction.cls}"] = 1
    return fields


def outcome_fields(prediction: Prediction, outcome: Outcome, now: float, max_lag_s: float) -> dict[str, float]:
    """The counters an outcome joined to its prediction adds: a late one (observed more than
    `max_lag_s` after the prediction) is counted as such and judged no further."""
    lag = (outcome.observed or now) - prediction.time
    if lag > max_lag_s:
        return {"late": 1}
    fields: dict[str, float] = {f"lag:{bisect.bisect_left(LAG_BUCKETS, max(lag, 0.0))}": 1}
    if outcome.label is not None:
        fields |= {"labelled": 1, "correct": int(prediction.cls == outcome.label)}
    if outcome.value is not None and prediction.value is not None:
        error = prediction.value - outcome.value
        fields |= {"valued": 1, "abs_error": abs(error), "squared_error": error * error}
    if outcome.reward is not None:
        fields |= {"rewarded": 1, "reward": outcome.reward}
    return fields


@dataclass
class QualityTotals:
    predictions: int = 0
    top_sum: float = 0.0  # of the top class probability, for the label-free estimate
    with_top: int = 0
    classes: dict[int, int] = field(default_factory=dict)  # predicted class -> count
    labelled: int = 0  # class labels joined
    correct: int = 0
    valued: int = 0  # numeric outcomes joined (with a predicted value)
    abs_error: float = 0.0
    squared_error: float = 0.0
    rewarded: int = 0
    reward: float = 0.0
    late: int = 0
    duplicate: int = 0
    lag: list[int] = field(default_factory=lambda: [0] * len(LAG_BUCKETS))

    @classmethod
    def from_fields(cls, fields: Mapping[str, float]) -> QualityTotals:
        totals = cls()
        for name, number in fields.items():
            kind, _, index = name.partition(":")
            if kind == "class":
                totals.classes[int(index)] = int(number)
            elif kind == "lag":
                totals.lag[int(index)] = int(number)
            elif kind in _FLOATS:
                setattr(totals, kind, float(number))
            elif kind in cls.__dataclass_fields__:
                setattr(totals, kind, round(number))
        return totals

    def fields(self) -> dict[str, float]:
        """The counters, named as `from_fields` reads them."""
        counters: dict[str, float] = {name: getattr(self, name) for name in self.__dataclass_fields__
                                      if name not in ("classes", "lag")}  # fmt: skip
        counters |= {f"class:{c}": n for c, n in self.classes.items()}
        counters |= {f"lag:{i}": n for i, n in enumerate(self.lag) if n}
        return counters

    def minus(self, earlier: QualityTotals) -> QualityTotals:
        """The window from `earlier` to this; counters that went down were reset (a restart):
        then this whole total is the window."""
        if self.predictions < earlier.predictions or self.labelled < earlier.labelled:
            return self
        before = earlier.fields()
        return QualityTotals.from_fields({k: v - before.get(k, 0) for k, v in self.fields().items()})

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.valued if self.valued else None

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.squared_error / self.valued) if self.valued else None

    @property
    def mean_reward(self) -> float | None:
        return self.reward / self.rewarded if self.rewarded else None

    @property
    def mean_top(self) -> float | None:
        """The label-free confidence estimate: the mean probability of the predicted class."""
        return self.top_sum / self.with_top if self.with_top else None

    @property
    def coverage(self) -> float | None:
        """The share of predictions an outcome was joined to."""
        joined = self.labelled + self.valued + self.rewarded
        return joined / self.predictions if self.predictions else None
