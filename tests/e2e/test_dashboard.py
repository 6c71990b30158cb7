"""The Grafana dashboard of deploy/grafana/dashboards/, checked against the gateway itself (no Grafana,
no Prometheus).

The series it may query are the ones the gateway really exposes: a gateway in front of a real
Triton, with admission, the cache, micro-batching and a shadow on, scraped after traffic that
exercises each. Every series is then known by its exposed name (`_total`, `_bucket`, ...), its
labels and its family's type.

Each query is tokenized enough to find its metric selectors, their label matchers, the labels of
`by`/`without`/`on`/`ignoring` clauses and the function each selector sits in. Checked: every
selector is an exposed series; every label it matches or groups by is one those series carry;
counters and histograms only through rate/irate/increase, gauges never; quantiles grouped by `le`;
`$variables` defined (multi-value ones matched with a regex). Then the dashboard itself: the
Prometheus datasource (uid `prometheus`, from the provisioning) for every query, resolved as Grafana
does; unique panel ids; a grid without overlaps; the rows, each with panels charting what it is
about; the `model` and `pool` variables; and every family the gateway exposes charted somewhere.

The checks are run on mutated copies of the dashboard too, so that they are known to catch mistakes.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb

from gateway.local.samples import digits
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "gateway.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
VARIABLES = {"model", "pool"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}
# Row title -> exposed series a panel of that row must chart.
ROWS: dict[str, set[str]] = {
    "Traffic": {"gateway_requests_total", "gateway_request_duration_seconds_bucket"},
    "Cache": {"gateway_cache_lookups_total"},
    "Admission and queue": {"gateway_queue_depth", "gateway_queue_wait_seconds_bucket"},
    "Upstream health and resilience": {
        "gateway_upstream_ready",
        "gateway_upstream_ejected",
        "gateway_pool_endpoints",
        "gateway_dns_addresses",
        "gateway_dns_failures_total",
    },
    "Shadow comparisons": {"gateway_shadow_argmax_disagreements_total", "gateway_shadow_argmax_compared_total"},
    "Micro-batching": {"gateway_batch_size_bucket", "gateway_batch_merged_calls_total"},
    "Core": {"gateway_core_threads", "gateway_core_dropped_total"},
    "Rollouts": {"gateway_rollout_leader"},
}

Doc = dict[str, Any]


# ------------------------------------------------------------------------------ exposed series


@dataclass(frozen=True)
class Series:
    family: str
    kind: str  # the family's type: counter, gauge, histogram, ...
    labels: frozenset[str]


def _config(triton: str) -> dict[str, Any]:
    """Every feature with series of its own: admission, the cache, micro-batching, the pool's
    endpoint found by DNS (`localhost`, from /etc/hosts); the classifier gets a rollout (its shadow
    phase: shadow copies)."""
    variant = {"pool": "gpu", "model": "classifier"}
    port = triton.rpartition(":")[2]
    return {
        "pools": {"gpu": {"endpoints": [f"dns:localhost:{port}"], "max_inflight": 2, "max_queue": 64}},
        "default_pool": "gpu",
        "cache": {"enabled": True},
        "batching": {"enabled": True},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "routes": {
            "classifier": {
                "variants": [{"name": "1", "version": "1", "weight": 100, **variant},
                             {"name": "2", "version": "2", "weight": 0, **variant}],
                "cache": {"enabled": False},
            },
        },
    }  # fmt: skip


def _start_rollout(admin_address: str) -> None:
    admin = Admin(admin_address)
    try:
        spec = apb.RolloutSpec(model="classifier", candidate="2", baseline="1", shadow_requests=10_000)
        admin.stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the controller's first tick sets the shadow
            route = admin.routes("classifier").routes[0]
            if route.shadows:
                return
            time.sleep(0.05)
        raise AssertionError("the rollout did not reach its shadow phase")
    finally:
        admin.close()


def _traffic(address: str) -> None:
    """Concurrent requests (queueing, merged calls, shadow copies), then repeats (cache hits)."""
    client = Client(address)
    try:
        pixels = digits()["pixels"]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: client.call(digit_request(pixels[n % len(pixels)])), range(48)))
        identity = pb.ModelInferRequest(model_name="identity")
        identity.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
        identity.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
        for _ in range(3):  # a miss, then hits
            client.call(identity)
    finally:
        client.close()


@pytest.fixture(scope="module")
def exposed(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Series]:
    """Every series a real gateway exposes once each of its features has seen traffic."""
    workdir = tmp_path_factory.mktemp("dashboard")
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config(triton.address)))
    args = ["--config", str(path), "--metrics-port", "0"]
    with running_gateway(args, workdir / "gateway.log") as gateway:
        _start_rollout(gateway.admin_address)
        _traffic(gateway.address)
        deadline = time.monotonic() + 10
        while True:  # shadow copies are compared after the callers have their answers
            with urllib.request.urlopen(f"http://{gateway.metrics_address}/metrics", timeout=5) as response:
                text = response.read().decode()
            if "gateway_shadow_max_abs_error_bucket" in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    series: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # a family with nothing to report yet has no series
            known = series.get(sample.name)
            labels = frozenset(sample.labels) | (known.labels if known else frozenset())
            series[sample.name] = Series(family.name, family.type, labels)
    return series


def test_the_exposition_has_what_the_dashboard_is_built_on(exposed: dict[str, Series]) -> None:
    """A sanity check of the fixture, so that the others do not pass on an empty set."""
    assert exposed["gateway_requests_total"].labels == {"method", "model", "variant", "code"}
    assert {"gateway_request_duration_seconds_bucket", "gateway_request_duration_seconds_sum"} <= set(exposed)
    assert exposed["gateway_upstream_ready"] == Series(
        "gateway_upstream_ready", "gauge", frozenset({"pool", "endpoint"})
    )
    assert "gateway_shadow_max_abs_error_bucket" in exposed
    assert "gateway_shadow_max_abs_error_sum" not in exposed, "the shadow error histogram has buckets only"
    assert {"gateway_queue_wait_seconds_bucket", "gateway_batch_size_bucket", "gateway_core_threads"} <= set(exposed)


# --------------------------------------------------------------------------------------- PromQL

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<matchers>\{[^{}]*\})
    |(?P<range>\[[^\[\]]*\])
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<variable>\$\{?\w+\}?)
    |(?P<open>\()|(?P<close>\))
    |(?P<punct>==|!=|>=|<=|[-+*/%^<>,])""",
    re.VERBOSE,
)
_MATCHER = re.compile(r"""\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*(?:,|$)""")
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
FUNCTIONS = {
    *("sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group"),
    *("rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes", "histogram_quantile"),
    *("abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "scalar", "vector", "time"),
    *("sum_over_time", "avg_over_time", "max_over_time", "min_over_time", "last_over_time", "label_replace"),
}
CLAUSES = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", *CLAUSES}
COUNTING = {"rate", "irate", "increase"}


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, quoted value)
    within: tuple[str, ...]  # enclosing functions, innermost last


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (clause, labels)
    functions: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def parse_query(expr: str) -> Query:
    """The selectors, grouping clauses and functions of a PromQL expression (no full grammar)."""
    query = Query()
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            query.errors.append(f"cannot tokenize at {expr[position:]!r}")
            return query
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
    query.variables = {a or b for a, b in _VARIABLE.findall(expr)}
    stack: list[tuple[str, str]] = []  # ("call", function) | ("clause", keyword) | ("group", "")
    pending = ""  # an aggregation whose `by (...)` comes before its argument: `sum by (le) (...)`
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        in_clause = bool(stack) and stack[-1][0] == "clause"
        if kind == "open":
            previous = tokens[index - 1] if index else ("", "")
            if previous[0] == "ident" and previous[1] in CLAUSES:
                stack.append(("clause", previous[1]))
                query.grouping.append((previous[1], ()))
            elif previous[0] == "ident":
                stack.append(("call", previous[1]))
            elif pending and previous[0] == "close":
                stack.append(("call", pending))
                pending = ""
            else:
                stack.append(("group", ""))
        elif kind == "close":
            if not stack:
                query.errors.append("unbalanced ')'")
                return query
            stack.pop()
        elif kind == "ident" and in_clause:
            clause, labels = query.grouping[-1]
            query.grouping[-1] = (clause, (*labels, text))
        elif kind == "ident" and text not in CLAUSES and (following[0] == "open" or following[1] in ("by", "without")):
            if text not in FUNCTIONS:
                query.errors.append(f"unknown function {text}()")
            query.functions.add(text)
            pending = text if following[0] != "open" else ""
        elif kind == "ident" and text not in KEYWORDS:
            matchers: list[tuple[str, str, str]] = []
            if following[0] == "matchers":
                body = following[1][1:-1]
                found = list(_MATCHER.finditer(body))
                if "".join(m.group() for m in found) != body:
                    query.errors.append(f"cannot read the matchers {following[1]}")
                matchers = [(m.group(1), m.group(2), m.group(3)) for m in found]
            within = tuple(name for role, name in stack if role == "call")
            query.selectors.append(Selector(text, tuple(matchers), within))
        elif kind == "matchers" and (not index or tokens[index - 1][0] != "ident"):
            query.errors.append(f"a selector without a metric name: {text}")
    if stack:
        query.errors.append("unbalanced '('")
    if not query.selectors:
        query.errors.append("no metric selector")
    return query


def query_problems(
    expr: str, exposed: dict[str, Series], variables: dict[str, bool], heatmap: bool = False
) -> list[str]:
    """What is wrong with one query, given the exposed series and the dashboard's variables (name:
    multi-value or not)."""
    multi = {name for name, many in variables.items() if many}
    query = parse_query(expr)
    problems = list(query.errors)
    carried: set[str] = set()
    for selector in query.selectors:
        series = exposed.get(selector.name)
        if series is None:
            problems.append(f"{selector.name} is not a series the gateway exposes")
            continue
        carried |= series.labels
        for label, operator, value in selector.matchers:
            if label not in series.labels:
                problems.append(f"{selector.name} has no label {label}")
            if any(a or b for a, b in _VARIABLE.findall(value) if (a or b) in multi) and operator not in ("=~", "!~"):
                problems.append(f"{selector.name}: multi-value variable in {label}{operator}{value}, not a regex match")
        innermost = selector.within[-1] if selector.within else ""
        if series.kind in ("counter", "histogram", "summary") and innermost not in COUNTING:
            problems.append(f"{selector.name} is a {series.kind} series, not under rate/irate/increase")
        if series.kind == "gauge" and innermost in COUNTING:
            problems.append(f"{selector.name} is a gauge, under {innermost}()")
        if selector.name.endswith("_bucket") and "histogram_quantile" not in selector.within and not heatmap:
            problems.append(f"{selector.name} outside histogram_quantile (and not a heatmap)")
    for clause, labels in query.grouping:
        for label in labels:
            if carried and label not in carried | {"instance", "job"}:
                problems.append(f"{clause} ({label}): none of {sorted(s.name for s in query.selectors)} has it")
    if "histogram_quantile" in query.functions and not any(
        clause == "by" and "le" in labels for clause, labels in query.grouping
    ):
        problems.append("histogram_quantile over an aggregation that drops le")
    for name in sorted(query.variables - set(variables) - BUILTIN_VARIABLES):
        problems.append(f"undefined variable ${name}")
    return problems


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('sum by (model) (rate(gateway_requests_total{model=~"$model"}[$__rate_interval]))', None),
        ("sum(rate(gateway_requests[5m]))", "gateway_requests is not a series"),
        ("sum(gateway_requests_total)", "not under rate"),
        ("rate(gateway_queue_depth[5m])", "is a gauge, under rate()"),
        ('sum(rate(gateway_requests_total{modle="a"}[5m]))', "has no label modle"),
        ('sum(rate(gateway_requests_total{model="$model"}[5m]))', "not a regex match"),
        ("sum by (pool) (rate(gateway_requests_total[5m]))", "by (pool)"),
        ("histogram_quantile(0.9, sum by (model) (rate(gateway_request_duration_seconds_bucket[5m])))", "drops le"),
        ("sum(rate(gateway_shadow_max_abs_error_sum[5m]))", "gateway_shadow_max_abs_error_sum is not a series"),
        ("sum(rate(gateway_requests_total[5m]) / 2", "unbalanced"),
        ("sum(rat(gateway_requests_total[5m]))", "unknown function rat()"),
        ('sum(rate({__name__="gateway_requests_total"}[5m]))', "without a metric name"),
        ('sum(rate(gateway_requests_total{model=~"$modle"}[5m]))', "undefined variable $modle"),
    ],
)
def test_the_query_checks_catch_mistakes(exposed: dict[str, Series], expr: str, problem: str | None) -> None:
    problems = query_problems(expr, exposed, dict.fromkeys(VARIABLES, True))
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


# ------------------------------------------------------------------------------------ dashboard


def load_dashboard() -> Doc:
    dashboard: Doc = json.loads(DASHBOARD.read_text())
    return dashboard


def provisioned_datasources() -> tuple[dict[str, str], str | None]:
    """uid -> type of the provisioned datasources, and the default's uid."""
    path = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
    datasources = yaml.safe_load(path.read_text())["datasources"]
    default = next((d["uid"] for d in datasources if d.get("isDefault")), None)
    return {d["uid"]: d["type"] for d in datasources}, default


def _panels(dashboard: Doc) -> Iterator[Doc]:
    """Every panel, rows' collapsed ones included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _rows(dashboard: Doc) -> tuple[dict[str, list[Doc]], list[Doc]]:
    """The panels of each row as Grafana groups them (an open row holds the top-level panels below
    it, up to the next row; a collapsed row its own), and the panels above the first row."""
    rows: dict[str, list[Doc]] = {}
    loose: list[Doc] = []
    current: list[Doc] = loose
    top = sorted(dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    for panel in top:
        if panel.get("type") == "row":
            current = rows.setdefault(panel.get("title", ""), [])
            current.extend(panel.get("panels", []))
        else:
            current.append(panel)
    return rows, loose


def _resolve(reference: Any, dashboard: Doc) -> Any:
    """A datasource reference with a `$variable` uid replaced by that datasource variable's value."""
    if isinstance(reference, dict) and isinstance(reference.get("uid"), str):
        names = _VARIABLE.findall(reference["uid"])
        if names:
            wanted = names[0][0] or names[0][1]
            for variable in dashboard.get("templating", {}).get("list", []):
                if variable.get("name") == wanted and variable.get("type") == "datasource":
                    value = variable.get("current", {}).get("value")
                    return {"type": variable.get("query"), "uid": value}
    return reference


def datasource_problems(dashboard: Doc) -> list[str]:
    """Every query's datasource, resolved as Grafana does: the target's, else its panel's, else the
    default datasource; the dashboard's ones must be the provisioned Prometheus."""
    known, default = provisioned_datasources()
    assert known.get(DATASOURCE["uid"]) == DATASOURCE["type"], "the provisioning has no Prometheus uid prometheus"
    problems = []
    defaulted = {"type": known.get(default or ""), "uid": default}
    for panel in _panels(dashboard):
        if panel.get("type") == "row":
            continue
        where = f"panel {panel.get('id')} ({panel.get('title')})"
        panel_source = _resolve(panel.get("datasource"), dashboard) or defaulted
        if panel_source != DATASOURCE:
            problems.append(f"{where}: datasource {panel_source}")
        for target in panel.get("targets", []):
            source = _resolve(target.get("datasource"), dashboard) or panel_source
            if source != DATASOURCE:
                problems.append(f"{where} target {target.get('refId')}: datasource {source}")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and (_resolve(variable.get("datasource"), dashboard) or defaulted) != (
            DATASOURCE
        ):
            problems.append(f"variable {variable.get('name')}: datasource {variable.get('datasource')}")
    return problems


def layout_problems(dashboard: Doc) -> list[str]:
    problems = []
    ids = [panel.get("id") for panel in _panels(dashboard)]
    if not all(isinstance(i, int) and i > 0 for i in ids):
        problems.append(f"panel ids must be positive integers, got {ids}")
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates:
        problems.append(f"duplicate panel ids {duplicates}")
    cells: dict[tuple[int, int], Any] = {}
    for panel in dashboard.get("panels", []):
        grid = panel.get("gridPos", {})
        x, y, w, h = (grid.get(k) for k in "xywh")
        if not all(isinstance(v, int) for v in (x, y, w, h)) or not (x >= 0 and y >= 0 and w > 0 and h > 0):
            problems.append(f"panel {panel.get('id')}: bad gridPos {grid}")
            continue
        if x + w > 24:
            problems.append(f"panel {panel.get('id')}: wider than the grid ({grid})")
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            if cell in cells:
                problems.append(f"panels {cells[cell]} and {panel.get('id')} overlap at {cell}")
                break
            cells[cell] = panel.get("id")
    return problems


def _variables(dashboard: Doc) -> dict[str, Doc]:
    return {v.get("name", ""): v for v in dashboard.get("templating", {}).get("list", [])}


def variable_problems(dashboard: Doc, exposed: dict[str, Series]) -> list[str]:
    problems = []
    variables = _variables(dashboard)
    for name in sorted(VARIABLES):
        variable = variables.get(name)
        if variable is None:
            problems.append(f"no template variable {name}")
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        found = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^{}]*\})?\s*,\s*(\w+)\s*\)\s*", text)
        if variable.get("type") != "query" or found is None:
            problems.append(f"variable {name}: not a label_values query ({text!r})")
            continue
        metric, label = found.groups()
        if metric not in exposed:
            problems.append(f"variable {name}: {metric} is not a series the gateway exposes")
        elif label != name or label not in exposed[metric].labels:
            problems.append(f"variable {name}: label_values over {label}, which {metric} does not carry as {name}")
    return problems


def panel_problems(dashboard: Doc, exposed: dict[str, Series]) -> list[str]:
    problems = []
    variables = {name: bool(v.get("multi") or v.get("includeAll")) for name, v in _variables(dashboard).items()}
    for panel in _panels(dashboard):
        if panel.get("type") == "row":
            continue
        where = f"panel {panel.get('id')} ({panel.get('title')})"
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"{where}: duplicate refIds {refs}")
        for target in targets:
            heatmap = panel.get("type") == "heatmap" and target.get("format") == "heatmap"
            for problem in query_problems(target.get("expr", ""), exposed, variables, heatmap):
                problems.append(f"{where} target {target.get('refId')}: {problem}")
    return problems


def _charted(panels: list[Doc]) -> set[str]:
    return {
        selector.name
        for panel in panels
        for target in panel.get("targets", [])
        for selector in parse_query(target.get("expr", "")).selectors
    }


def row_problems(dashboard: Doc, exposed: dict[str, Series]) -> list[str]:
    problems = []
    rows, loose = _rows(dashboard)
    if loose:
        problems.append(f"panels above the first row: {[p.get('id') for p in loose]}")
    for title, needed in ROWS.items():
        if title not in rows:
            problems.append(f"no row {title!r} (rows: {list(rows)})")
        elif not rows[title]:
            problems.append(f"row {title!r} has no panels")
        elif missing := needed - _charted(rows[title]):
            problems.append(f"row {title!r} charts none of {sorted(missing)}")
    charted = {exposed[name].family for name in _charted(list(_panels(dashboard))) if name in exposed}
    families = {series.family for series in exposed.values()}
    # prometheus_client's creation timestamps of counters and histograms: series, not worth a panel.
    creations = {f for f in families if f.endswith("_created") and f.removesuffix("_created") in families}
    for family in sorted(families - creations - charted):
        problems.append(f"the gateway exposes {family}, which no panel charts")
    return problems


def dashboard_problems(dashboard: Doc, exposed: dict[str, Series]) -> list[str]:
    problems = []
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')}: datasource references need 36 or newer")
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("a provisioned dashboard needs a uid and a title")
    return [
        *problems,
        *datasource_problems(dashboard),
        *layout_problems(dashboard),
        *variable_problems(dashboard, exposed),
        *panel_problems(dashboard, exposed),
        *row_problems(dashboard, exposed),
    ]


def test_dashboard_is_in_the_provisioned_folder() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]  # deploy/grafana/dashboards
    assert DASHBOARD.parent == GRAFANA / "dashboards" and DASHBOARD.is_file()


def test_dashboard_queries_only_what_the_gateway_exposes(exposed: dict[str, Series]) -> None:
    dashboard = load_dashboard()
    assert dashboard_problems(dashboard, exposed) == []
    assert sum(1 for p in _panels(dashboard) if p.get("type") != "row") >= len(ROWS) * 2


# -------------------------------------------------------------------- the checks catch mistakes


def _panel(dashboard: Doc, title: str) -> Doc:
    return next(p for p in _panels(dashboard) if p.get("title", "").startswith(title))


def _rename(old: str, new: str) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                target["expr"] = target.get("expr", "").replace(old, new)

    return mutate


def _set(title: str, key: str, value: Any) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        _panel(dashboard, title)[key] = value

    return mutate


def _drop_targets_datasource(title: str, panel_value: Any) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        panel = _panel(dashboard, title)
        panel["datasource"] = panel_value
        for target in panel["targets"]:
            target.pop("datasource", None)

    return mutate


def _empty_row(title: str) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        members = {id(p) for p in _rows(dashboard)[0][title]}
        dashboard["panels"] = [p for p in dashboard["panels"] if id(p) not in members]

    return mutate


def _remove(title: str) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        dashboard["panels"].remove(_panel(dashboard, title))

    return mutate


def _drop_variable(name: str) -> Callable[[Doc], None]:
    def mutate(dashboard: Doc) -> None:
        dashboard["templating"]["list"] = [v for v in dashboard["templating"]["list"] if v["name"] != name]

    return mutate


def _inherit_mixed(dashboard: Doc) -> None:
    panel = _panel(dashboard, "Queue depth")
    panel["datasource"] = {"type": "datasource", "uid": "-- Mixed --"}
    panel["targets"][0]["datasource"] = {"type": "jaeger", "uid": "jaeger"}


MUTATIONS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "counter without _total": (_rename("gateway_pool_shed_total", "gateway_pool_shed"), "gateway_pool_shed is not"),
    "a series that is not exposed": (_rename("gateway_cache_l1_bytes", "gateway_cache_l2_bytes"), "l2_bytes is not"),
    "the shadow histogram's sum": (
        _rename("gateway_shadow_max_abs_error_bucket", "gateway_shadow_max_abs_error_sum"),
        "gateway_shadow_max_abs_error_sum is not",
    ),
    "a label the series lacks": (_rename('pool=~"$pool"', 'model=~"$pool"'), "has no label model"),
    "a gauge under rate": (
        _rename('(gateway_queue_depth{pool=~"$pool"})', '(rate(gateway_queue_depth{pool=~"$pool"}[5m]))'),
        "gateway_queue_depth is a gauge, under rate()",
    ),
    "a counter without rate": (
        _rename("(rate(gateway_pool_attempts_total{", "(max_over_time(gateway_pool_attempts_total{"),
        "gateway_pool_attempts_total is a counter series, not under rate",
    ),
    "a quantile that drops le": (_rename("sum by (le, model) (", "sum by (model) ("), "drops le"),
    "an unbalanced query": (_rename("[$__rate_interval]))", "[$__rate_interval])"), "unbalanced '('"),
    "wrong panel datasource": (_set("Queue depth", "datasource", {"type": "loki", "uid": "loki"}), "datasource"),
    "inherited wrong datasource": (
        _drop_targets_datasource("Queue depth", {"type": "jaeger", "uid": "jaeger"}),
        "target A: datasource {'type': 'jaeger'",
    ),
    "a target's own datasource": (_inherit_mixed, "target A: datasource {'type': 'jaeger'"),
    "duplicate panel id": (_set("Queue depth", "id", 2), "duplicate panel ids [2]"),
    "overlapping panels": (_set("Queue depth", "gridPos", {"x": 4, "y": 1, "w": 8, "h": 8}), "overlap"),
    "a row without panels": (_empty_row("Cache"), "row 'Cache' has no panels"),
    "a family no panel charts": (
        _remove("Redis breaker"),
        "the gateway exposes gateway_cache_redis_breaker_open, which no panel charts",
    ),
    "no model variable": (_drop_variable("model"), "no template variable model"),
    "no pool variable": (_drop_variable("pool"), "undefined variable $pool"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_dashboard_checks_catch_a_broken_dashboard(exposed: dict[str, Series], mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    dashboard = copy.deepcopy(load_dashboard())
    mutate(dashboard)
    problems = dashboard_problems(dashboard, exposed)
    assert any(expected in p for p in problems), problems


def test_inheriting_the_default_datasource_is_accepted(exposed: dict[str, Series]) -> None:
    """No datasource on a panel nor its targets: Grafana uses the default one, the provisioned Prometheus."""
    dashboard = copy.deepcopy(load_dashboard())
    _drop_targets_datasource("Queue depth", None)(dashboard)
    assert datasource_problems(dashboard) == []
