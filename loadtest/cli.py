"""`gateway-bench`: the load generator (`run`), the standard bench (`suite`, what `make bench` runs)
and the soak (`soak`). Installed with the `bench` extra (HDR histograms, plots, process sampling),
which the gateway itself does not need; `gateway loadtest|bench|soak` are the same commands.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Load tests and benchmarks of the gateway.")
P = ParamSpec("P")
R = TypeVar("R")
BENCH_MODULES = frozenset({"hdrh", "psutil", "matplotlib"})


def needs_bench_extra(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a missing `bench` extra into one line saying how to install it, not a traceback."""

    @wraps(command)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] not in BENCH_MODULES:
                raise
            typer.echo(f"error: {exc.name} is missing: install the bench extra (pip install 'triton-gateway[bench]')",
                       err=True)  # fmt: skip
            raise typer.Exit(2) from exc

    return checked


@app.command("run")
@needs_bench_extra
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML (see loadtest/README.md).")],
    target: Annotated[str | None, typer.Option(help="Override the scenario's target HOST:PORT.")] = None,
    direct: Annotated[
        str | None, typer.Option(help="Also run against this Triton, interleaved, and report ratios.")
    ] = None,
    gateway_pid: Annotated[int | None, typer.Option(help="With --direct: the gateway's PID, for CPU/request.")] = None,
    rounds: Annotated[int, typer.Option(help="With --direct: A/B rounds.")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG: latency percentiles and throughput over time.")
    ] = None,
) -> None:
    """Run a load scenario (closed or open loop) and print latency percentiles and throughput."""
    from rich.console import Console
    from rich.progress import Progress

    from loadtest.compare import compare
    from loadtest.plot import plot_results
    from loadtest.report import table, write_json
    from loadtest.runner import run_scenario
    from loadtest.scenario import load_scenario

    loaded = load_scenario(scenario)
    console = Console()
    if direct is not None:
        comparison = asyncio.run(compare(loaded, direct, target or loaded.target, gateway_pid, rounds))
        rows = [comparison.summary()]
        console.print(table(f"{loaded.name}: gateway vs direct", rows))
        plotted = [("direct", comparison.direct[0]), ("gateway", comparison.gateway[0])]
    else:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(loaded.name, total=1.0)
            result = asyncio.run(run_scenario(loaded, target, lambda done: progress.update(task, completed=done)))
        rows = [result.summary()]
        console.print(table(loaded.name, rows))
        plotted = [(result.target, result)]
    if json_out is not None:
        write_json(json_out, {"results": rows})
    if plot is not None:
        console.print(f"plot: {plot_results(plotted, loaded.name, plot)}")


@app.command()
@needs_bench_extra
def suite(
    out: Annotated[Path, typer.Option(help="Folder for the JSON and Markdown results.")] = Path("results"),
    duration: Annotated[float, typer.Option(help="Seconds per measured run.")] = 5.0,
    rounds: Annotated[int, typer.Option(help="A/B rounds per scenario.")] = 2,
    only: Annotated[str | None, typer.Option(help="Run only the scenarios whose name contains this.")] = None,
) -> None:
    """Compare the gateway with direct Triton on the standard scenarios (a few minutes)."""
    from loadtest.bench import run_bench

    sys.exit(run_bench(out, duration, rounds, only))


@app.command()
@needs_bench_extra
def soak(
    out: Annotated[Path, typer.Option(help="Folder for the JSON and PNG results.")] = Path("results"),
    minutes: Annotated[float, typer.Option(help="Length of the run.")] = 10.0,
    rate: Annotated[float, typer.Option(help="Requests per second (open loop, Poisson).")] = 300.0,
    workers: Annotated[int, typer.Option(min=1, help="The gateway's --workers (the core's threads).")] = 1,
) -> None:
    """A long mixed run through a local gateway, watching its memory (RSS) for growth."""
    from loadtest.soak import run_soak

    sys.exit(run_soak(out, minutes, rate, workers))


def main() -> None:
    app()
