"""`gatewayctl`: the admin API from a shell. Tables for people, `--json` for scripts.

    gatewayctl routes [MODEL]
    gatewayctl set-weights MODEL 1=90 2=10
    gatewayctl promote MODEL VARIANT          # blue-green: all weight to one variant
    gatewayctl rollback MODEL
    gatewayctl shadow MODEL VARIANT --fraction 0.1 [--max-inflight 16]
    gatewayctl shadow-stats [MODEL]
    gatewayctl set-route MODEL FILE.yaml      # a route in the config file's format
    gatewayctl pools                          # admission, retries, endpoint health
    gatewayctl cache-stats
    gatewayctl invalidate MODEL [--variant V] | --all
    gatewayctl watch [MODEL]
    gatewayctl rollout start|status|wait|pause|resume|abort|promote|list ...   # see gateway.ctl.rollouts
    gatewayctl apply -f rollout.yaml [--wait]  # a rollout declared in a file; see gateway.ctl.apply
    gatewayctl audit [--model M] [--since 10m] [--verify]
    gatewayctl report-outcomes FILE.jsonl        # ground truth; see gateway.ctl.feedback
    gatewayctl outcomes MODEL                    # accuracy, errors, rewards, confidence per variant
    gatewayctl drift MODEL | drift reference MODEL FILE.npz

Every command takes `--admin HOST:PORT` (env GATEWAY_ADMIN), `--token` (env GATEWAY_ADMIN_TOKEN)
and `--json`, before the command or after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from gateway.admin.convert import route_to_proto
from gateway.config.schema import RouteConfig
from gateway.config.yaml_text import load_yaml
from gateway.ctl.apply import apply
from gateway.ctl.common import (
    Connection,
    admin_stub,
    app,
    as_dict,
    call,
    connected,
    console,
    print_json,
    show,
    show_table,
)
from gateway.ctl.feedback import drift, outcomes, report_outcomes
from gateway.ctl.rollouts import audit, rollout_app
from gateway_admin import admin_pb2 as pb


def _routes_table(routes: list[pb.Route], title: str) -> Table:
    table = Table(title=title)
    for column in ("model", "variant", "pool", "upstream", "weight", "share", "rules / sticky / shadows"):
        table.add_column(column, justify="right" if column in ("weight", "share") else "left")
    for route in routes:
        total = sum(v.weight for v in route.variants) or 1
        extras = [
            f"{r.header} {pb.MatchRule.Op.Name(r.op).lower()} {list(r.values)} → {r.variant}" for r in route.rules
        ]
        extras += [f"sticky on {route.sticky_header}"] if route.sticky_header else []
        extras += [f"shadow → {s.variant} at {s.fraction:g} (≤{s.max_inflight} in flight)" for s in route.shadows]
        for index, variant in enumerate(route.variants):
            upstream = f"{variant.model}" + (f" v{variant.version}" if variant.version else "")
            model = (route.model + (" (auto)" if route.discovered else "")) if index == 0 else ""
            share = f"{100 * variant.weight / total:.1f}%"
            table.add_row(model, variant.name, variant.pool, upstream, str(variant.weight), share,
                          "\n".join(extras) if index == 0 else "")  # fmt: skip
    return table


def _show_route(conn: Connection, response: pb.RouteResponse, what: str) -> None:
    show(conn, response, lambda r: _routes_table([r.route], f"{what} (revision {r.revision})"))


@app.command()
@connected
def routes(
    model: Annotated[str, typer.Argument(help="Only this model (its zero-config route is built if needed).")] = "",
    *,
    conn: Connection,
) -> None:
    """Show the route table."""
    response = call(conn, lambda s, m: s.GetRoutes(pb.GetRoutesRequest(model=model), metadata=m))
    show(conn, response, lambda r: _routes_table(list(r.routes), f"routes (revision {r.revision})"))


def _weights(assignments: list[str]) -> dict[str, int]:
    weights = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit():
            raise typer.BadParameter(f"expected VARIANT=WEIGHT with a whole number, got {item!r}")
        weights[name] = int(value)
    return weights


@app.command("set-weights")
@connected
def set_weights(
    model: str,
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="VARIANT=WEIGHT pairs by variant name (gatewayctl routes MODEL lists them), e.g. "
            "stable=90 canary=10; a zero-config route's variants are its versions: 1=90 2=10."
        ),
    ],
    *,
    conn: Connection,
) -> None:
    """Change the weights of some variants (the others keep theirs), atomically."""
    request = pb.SetWeightsRequest(model=model, weights=_weights(assignments))
    _show_route(conn, call(conn, lambda s, m: s.SetWeights(request, metadata=m)), "weights set")


@app.command()
@connected
def promote(
    model: str,
    variant: str,
    *,
    conn: Connection,
) -> None:
    """Blue-green: move all weight to VARIANT in one change."""
    request = pb.PromoteRequest(model=model, variant=variant)
    _show_route(conn, call(conn, lambda s, m: s.Promote(request, metadata=m)), f"{variant} promoted")


@app.command()
@connected
def rollback(
    model: str,
    *,
    conn: Connection,
) -> None:
    """Restore the route as it was before its last change."""
    request = pb.RollbackRequest(model=model)
    _show_route(conn, call(conn, lambda s, m: s.Rollback(request, metadata=m)), "rolled back")


@app.command()
@connected
def shadow(
    model: str,
    variant: str,
    fraction: Annotated[float, typer.Option(help="Share of requests copied, 0..1; 0 stops shadowing.")] = 1.0,
    max_inflight: Annotated[int, typer.Option(help="Copies in flight at most; more are dropped.")] = 16,
    *,
    conn: Connection,
) -> None:
    """Mirror a fraction of MODEL's requests to VARIANT and compare its outputs."""
    policy = pb.ShadowPolicy(variant=variant, fraction=fraction, max_inflight=max_inflight)
    request = pb.SetShadowRequest(model=model, shadow=policy)
    _show_route(conn, call(conn, lambda s, m: s.SetShadow(request, metadata=m)), "shadow set")


def _shadow_stats_view(response: pb.GetShadowStatsResponse) -> Table:
    table = Table(title="shadow comparisons")
    for column in (
        "model",
        "primary",
        "shadow",
        "sent",
        "dropped",
        "failed",
        "compared",
        "exact",
        "argmax disagree",
        "mismatches",
        "max abs err",
        "max rel err",
        "streams (first 4 agree)",
        "first answer primary / shadow",
    ):
        table.add_column(column)
    for s in response.stats:
        streams = f"{s.streams} ({s.first_k_agreements})" if s.streams else "-"
        first = (f"{s.primary_first_response_ms:.1f} / {s.shadow_first_response_ms:.1f} ms"
                 if s.first_response_pairs else "-")  # fmt: skip
        rate = (
            f"{s.argmax_disagreements} ({100 * s.argmax_disagreements / s.argmax_compared:.1f}%)"
            if s.argmax_compared
            else "-"
        )
        table.add_row(s.model, s.primary, s.variant, str(s.sent), str(s.dropped), str(s.failed), str(s.compared),
                      str(s.exact_matches), rate, str(s.mismatches), f"{s.max_abs_error:.4g}",
                      f"{s.max_rel_error:.4g}", streams, first)  # fmt: skip
    return table


@app.command("shadow-stats")
@connected
def shadow_stats(
    model: Annotated[str, typer.Argument(help="Only this model.")] = "",
    *,
    conn: Connection,
) -> None:
    """How shadow variants compare with the primary."""
    response = call(conn, lambda s, m: s.GetShadowStats(pb.GetShadowStatsRequest(model=model), metadata=m))
    show(conn, response, _shadow_stats_view)


def _cache_stats_view(stats: pb.CacheStats) -> Table:
    table = Table(title="response cache", show_header=False)
    lookups = stats.hits_l1 + stats.hits_l2 + stats.misses
    hit_rate = f" ({100 * (stats.hits_l1 + stats.hits_l2) / lookups:.1f}% of lookups)" if lookups else ""
    rows = [
        ("hits", f"l1 {stats.hits_l1}, l2 {stats.hits_l2}{hit_rate}"),
        ("misses", f"{stats.misses} ({stats.coalesced} shared another's upstream call)"),
        ("bypassed", str(stats.bypassed)),
        ("stored", f"{stats.stores} ({stats.too_large} too large to store)"),
        ("l1", f"{stats.l1_entries} entries, {stats.l1_bytes:,} of {stats.l1_max_bytes:,} bytes, {stats.evictions} evicted"),  # noqa: E501
        ("redis", f"breaker {stats.redis_breaker}, {stats.l2_errors} errors, {stats.l2_skipped} skipped"
         if stats.redis_configured else "not configured"),
        ("invalidated", str(stats.invalidated)),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command("cache-stats")
@connected
def cache_stats(*, conn: Connection) -> None:
    """Response cache hits and misses per tier, bytes, evictions, coalesced requests."""
    stats = call(conn, lambda s, m: s.GetCacheStats(pb.GetCacheStatsRequest(), metadata=m))
    show(conn, stats, _cache_stats_view)


def _stream_stats_view(response: pb.GetStreamStatsResponse) -> Table:
    table = Table(title="streamed requests (generative models)")
    for column in ("model", "variant", "requests", "done", "failed", "cancelled", "broken", "answers/request",
                   "first answer p50", "p99", "gap p50", "p99"):  # fmt: skip
        table.add_column(column)
    for s in response.stats:
        per_request = f"{s.responses / s.requests:.1f}" if s.requests else "-"
        times = (s.first_response_p50_ms, s.first_response_p99_ms, s.gap_p50_ms, s.gap_p99_ms)
        table.add_row(s.model, s.variant, str(s.requests), str(s.done), str(s.failed), str(s.cancelled),
                      str(s.broken), per_request, *(f"{ms:.1f} ms" for ms in times))  # fmt: skip
    return table


@app.command("stream-stats")
@connected
def stream_stats(
    model: Annotated[str, typer.Argument(help="Only this model.")] = "",
    *,
    conn: Connection,
) -> None:
    """Streamed requests per variant: how they ended, answers per request, first-answer time, gaps."""
    request = pb.GetStreamStatsRequest(model=model)
    show(conn, call(conn, lambda s, m: s.GetStreamStats(request, metadata=m)), _stream_stats_view)


def _queue_shares_view(pool: str, by: str, shares: Sequence[pb.QueueShare]) -> Table:
    """A pool's admission queue by tenant (or by priority class): what each holds and got."""
    table = Table(title=f"pool {pool}: queue by {by}")
    for column in (by, "queued", "in flight", "admitted", "after queueing", "shed", "expired", "wait p99"):
        table.add_column(column)
    for share in shares:
        name = (share.tenant or "(none)") if by == "tenant" else str(share.priority)
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(share.shed_by_reason.items()) if n)
        shed = f"{share.shed} ({reasons})" if reasons else str(share.shed)
        in_flight = str(share.in_flight) if by == "tenant" else "-"
        table.add_row(name, str(share.queued), in_flight, str(share.admitted), str(share.admitted_after_queueing),
                      shed, str(share.expired), f"{share.queue_wait_p99_ms:.1f} ms")  # fmt: skip
    return table


def _pools_view(response: pb.GetPoolStatsResponse) -> Table | None:
    for pool in response.pools:
        limit = f"limit {pool.limit}, queue ≤{pool.max_queue}" if pool.limit else "no admission limit"
        title = (f"pool {pool.name}: {limit}; {pool.in_flight} in flight, {pool.queued} queued; "
                 f"shed {pool.shed}, expired {pool.expired}, cancelled {pool.cancelled}; "
                 f"wait p50 {pool.queue_wait_p50_ms:.1f} ms p99 {pool.queue_wait_p99_ms:.1f} ms; "
                 f"attempts {pool.attempts}, retries {pool.retries} ({pool.retries_denied} denied)")  # fmt: skip
        table = Table(title=title)
        for column in ("endpoint", "found by", "ready", "ejected", "outstanding", "connections", "latency ewma",
                       "ejections", "unready models"):  # fmt: skip
            table.add_column(column)
        for e in pool.endpoints:
            ejected = f"yes ({e.ejected_for_s:.1f}s left)" if e.ejected else "no"
            table.add_row(e.address, e.source or "-", "yes" if e.ready else "NO", ejected, str(e.outstanding),
                          str(e.connections), f"{e.latency_ewma_ms:.2f} ms", str(e.ejections),
                          ", ".join(e.unready_models))  # fmt: skip
        show_table(table)
        for title, shares in (("tenant", pool.tenants), ("priority", pool.classes)):
            if any(share.admitted or share.shed or share.queued for share in shares):
                show_table(_queue_shares_view(pool.name, title, shares))
        if any(pool.affinity.values()):
            counts = ", ".join(f"{how} {pool.affinity.get(how, 0)}" for how in ("session", "prefix", "spilled", "new"))
            console.print(f"prefix affinity, streamed requests by how their endpoint was chosen: {counts}")
        for name in pool.names:  # the addresses behind each dns: endpoint
            failed = f"; last failure: {name.last_error}" if name.last_error else ""
            console.print(f"{name.name} → {', '.join(name.addresses) or 'no addresses'} "
                          f"({name.resolutions} resolutions, {name.failures} failed{failed})")  # fmt: skip
    return None


@app.command()
@connected
def pools(*, conn: Connection) -> None:
    """Upstream pools: admission (in flight, queued, shed, expired), retries, endpoints' health."""
    response = call(conn, lambda s, m: s.GetPoolStats(pb.GetPoolStatsRequest(), metadata=m))
    show(conn, response, _pools_view)


@app.command()
@connected
def invalidate(
    model: Annotated[str, typer.Argument(help="Drop this model's cached responses.")] = "",
    variant: Annotated[str, typer.Option(help="Only this variant's.")] = "",
    flush: Annotated[bool, typer.Option("--all", help="Drop every cached response.")] = False,
    *,
    conn: Connection,
) -> None:
    """Invalidate cached responses (both tiers) of a model, a variant, or all of them."""
    if not model and not flush:
        raise typer.BadParameter(
            "name a MODEL (and --variant V for one variant), or --all to drop every cached response"
        )
    request = pb.InvalidateCacheRequest(model=model, variant=variant, all=flush)
    response = call(conn, lambda s, m: s.InvalidateCache(request, metadata=m))
    if conn.as_json:
        print_json(response)
    else:
        console.print(f"removed {response.removed} cached responses")


@app.command("set-route")
@connected
def set_route(
    model: str,
    file: Annotated[Path, typer.Argument(help="YAML: the route as under `routes.MODEL` in the config file.")],
    *,
    conn: Connection,
) -> None:
    """Install a whole route (validated by the gateway; the running one stays if it is invalid)."""
    try:
        route = RouteConfig.model_validate(load_yaml(file.read_text(), str(file))).to_route(model)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise typer.BadParameter(f"{file}: {exc}") from exc
    request = pb.SetRouteRequest(route=route_to_proto(route))
    _show_route(conn, call(conn, lambda s, m: s.SetRoute(request, metadata=m)), "route set")


@app.command()
@connected
def watch(
    model: Annotated[str, typer.Argument(help="Only this model.")] = "",
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
    *,
    conn: Connection,
) -> None:
    """Print route changes as they happen (one JSON object per line)."""
    with admin_stub(conn) as (stub, metadata):
        for index, event in enumerate(stub.WatchEvents(pb.WatchEventsRequest(model=model), metadata=metadata), 1):
            typer.echo(json.dumps(as_dict(event), sort_keys=True), nl=True)
            if count and index >= count:
                break


app.add_typer(rollout_app, name="rollout")
app.command("apply")(apply)
app.command("audit")(audit)
app.command("outcomes")(outcomes)
app.command("report-outcomes")(report_outcomes)
app.command("drift")(drift)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
