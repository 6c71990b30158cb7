"""Routing policy, sans-IO: pure functions of the route table and the request's routing facts."""

from router.table import RouteTable, Target, UnknownModel

__all__ = ["RouteTable", "Target", "UnknownModel"]
