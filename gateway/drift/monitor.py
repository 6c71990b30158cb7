"""Drift per model and variant: samples collected into tumbling windows, each compared with the
model's reference when it closes. The reference is frozen from the first samples of the
model's main variant (the one with the most weight), or uploaded. A variant whose dataset
drifted (at least `drifted_share` of its features) for `consecutive` windows in a row raises an
alert. Pure apart from the clock it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from gateway.config.schema import DriftConfig
from gateway.drift.features import OUTPUT_CLASS, Features
from gateway.drift.stats import FeatureDrift, Thresholds, compare

__all__ = ["Alert", "DriftMonitor", "Reference", "VariantView", "WindowResult", "alert_of", "due", "judge"]

CATEGORICAL = frozenset({OUTPUT_CLASS})


@dataclass
class Reference:
    source: str  # "frozen from variant V" | "uploaded"
    features: dict[str, np.ndarray]
    samples: int


@dataclass(frozen=True, slots=True)
class WindowResult:
    model: str
    variant: str
    number: int  # windows closed for this variant so far
    start: float
    end: float
    samples: int
    features: list[FeatureDrift]
    drifted_share: float
    drifted: bool
    consecutive: int


@dataclass(frozen=True, slots=True)
class Alert:
    result: WindowResult
    thresholds: dict[str, float]


@dataclass(frozen=True, slots=True)
class VariantView:
    """What the admin API and the metrics show of a variant's windows."""

    windows: int  # closed so far
    collecting: int  # samples in the open window
    consecutive: int
    last: WindowResult | None


def due(samples: int, started: float, now: float, settings: DriftConfig) -> bool:
    """Whether a window of `samples` opened at `started` closes now."""
    by_time = settings.window_s is not None and now - started >= settings.window_s
    return samples >= settings.window_samples or (by_time and samples >= settings.min_samples)


def judge(reference: Mapping[str, np.ndarray], window: Mapping[str, np.ndarray], settings: DriftConfig,
          thresholds: Thresholds) -> tuple[list[FeatureDrift], float, bool]:  # fmt: skip
    """A closed window's features against the reference: each feature, the drifted share, the verdict."""
    features = compare(reference, window, thresholds, CATEGORICAL)
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return features, share, bool(features) and share >= settings.drifted_share


def alert_of(result: WindowResult, settings: DriftConfig) -> Alert | None:
    """An alert once a variant has drifted `consecutive` windows in a row."""
    if not (result.drifted and result.consecutive >= settings.consecutive):
        return None
    thresholds = {"psi_warn": settings.psi_warn, "psi_alert": settings.psi_alert, "ks_alpha": settings.ks_alpha,
                  "drifted_share": settings.drifted_share, "consecutive": settings.consecutive}  # fmt: skip
    return Alert(result, thresholds)


@dataclass
class _Collecting:
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    samples: int = 0
    started: float = 0.0

    def add(self, features: Features) -> None:
        for name, values in features.items():
            self.values.setdefault(name, []).append(values)
        self.samples += 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.values.items()}


@dataclass
class _Variant:
    window: _Collecting = field(default_factory=_Collecting)
    windows: int = 0
    consecutive: int = 0
    last: WindowResult | None = None


class DriftMonitor:
    def __init__(self, settings: DriftConfig, main_variant: Callable[[str], str | None],
                 clock: Callable[[], float]) -> None:  # fmt: skip
        """`main_variant`: the variant whose first samples become a model's reference."""
        self.settings = settings
        self.thresholds = Thresholds(settings.bins, settings.psi_warn, settings.psi_alert, settings.ks_alpha)
        self._main, self._clock = main_variant, clock
        self.references: dict[str, Reference] = {}
        self._collecting: dict[str, tuple[str, _Collecting]] = {}  # model -> (variant, its first samples)
        self.variants: dict[tuple[str, str], _Variant] = {}

    def set_reference(self, model: str, features: Mapping[str, np.ndarray], source: str) -> Reference:
        rows = max((len(v) for v in features.values()), default=0)
        self.references[model] = Reference(source, dict(features), rows)
        self._collecting.pop(model, None)
        for (name, _), state in self.variants.items():
            if name == model:  # windows so far were against another reference
                state.window, state.consecutive = _Collecting(started=self._clock()), 0
        return self.references[model]

    def observe(self, model: str, variant: str, features: Features) -> Alert | None:
        now = self._clock()
        if model not in self.references:
            self._freeze(model, variant, features)
            return None
        state = self.variants.setdefault((model, variant), _Variant(_Collecting(started=now)))
        if state.window.samples == 0:
            state.window.started = now
        state.window.add(features)
        if not due(state.window.samples, state.window.started, now, self.settings):
            return None
        return self._close(model, variant, state, now)

    def _freeze(self, model: str, variant: str, features: Features) -> None:
        main = self._main(model)
        if main is not None and variant != main:
            return
        chosen, collecting = self._collecting.setdefault(model, (variant, _Collecting(started=self._clock())))
        if chosen != variant:
            return
        collecting.add(features)
        if collecting.samples >= self.settings.reference_samples:
            self.set_reference(model, collecting.arrays(), f"frozen from variant {variant}'s first samples")

    def _close(self, model: str, variant: str, state: _Variant, now: float) -> Alert | None:
        window = state.window
        features, share, drifted = judge(self.references[model].features, window.arrays(), self.settings,
                                         self.thresholds)  # fmt: skip
        state.consecutive = state.consecutive + 1 if drifted else 0
        state.windows += 1
        state.last = WindowResult(model, variant, state.windows, window.started, now, window.samples, features,
                                  share, drifted, state.consecutive)  # fmt: skip
        state.window = _Collecting(started=now)
        return alert_of(state.last, self.settings)

    def views(self) -> dict[tuple[str, str], VariantView]:
        return {key: VariantView(state.windows, state.window.samples, state.consecutive, state.last)
                for key, state in self.variants.items()}  # fmt: skip

    def collecting(self, model: str) -> int:
        """Samples gathered so far for a reference not yet frozen."""
        entry = self._collecting.get(model)
        return entry[1].samples if entry else 0
