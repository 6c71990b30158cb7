"""CPU time and memory summed over a process and its live descendants (a proxy and its workers)."""

from __future__ import annotations

from collections.abc import Callable

import psutil

__all__ = ["cpu_seconds", "rss_bytes", "tree_total"]


def tree_total(process: psutil.Process, measure: Callable[[psutil.Process], float]) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += measure(member)
        except psutil.NoSuchProcess:  # a child that ended between the listing and the reading
            continue
    return total


def cpu_seconds(process: psutil.Process) -> float:
    return tree_total(process, lambda member: sum(member.cpu_times()[:2]))  # user + system


def rss_bytes(process: psutil.Process) -> int:
    return int(tree_total(process, lambda member: member.memory_info().rss))
