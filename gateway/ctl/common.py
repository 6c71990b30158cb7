"""What every `gatewayctl` command shares: the app, where the admin API is, how to call it.

Connection options go before the command (`gatewayctl --admin A --token T rollout status M`,
as kubectl and docker users type them) or after it; the command's own win.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway_admin import admin_pb2_grpc

__all__ = [
    "DEFAULT_ADMIN",
    "AdminOption",
    "Connection",
    "JsonOption",
    "TokenOption",
    "TransientError",
    "admin_stub",
    "app",
    "as_dict",
    "call",
    "connected",
    "connection_for",
    "console",
    "print_json",
    "read_bytes",
    "show",
    "show_table",
]

M = TypeVar("M", bound=Message)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Control a running gateway through its admin API.")
console = Console()

AdminOption = Annotated[
    str | None, typer.Option("--admin", help="Admin API HOST:PORT (env GATEWAY_ADMIN).", show_default=False)
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin bearer token (env GATEWAY_ADMIN_TOKEN).", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_ADMIN = "127.0.0.1:8002"


@dataclass(frozen=True)
class Connection:
    admin: str
    token: str
    as_json: bool


@app.callback()
def _connection(
    ctx: typer.Context,
    admin: Annotated[str, typer.Option("--admin", envvar="GATEWAY_ADMIN", help="Admin API HOST:PORT.")] = DEFAULT_ADMIN,
    token: Annotated[
        str, typer.Option("--token", envvar="GATEWAY_ADMIN_TOKEN", help="Admin bearer token.", show_default=False)
    ] = "",
    as_json: JsonOption = False,
) -> None:
    ctx.obj = Connection(admin, token, as_json)


def connection_for(ctx: typer.Context, admin: str | None, token: str | None, as_json: bool = False) -> Connection:
    obj = ctx.find_root().obj
    root = obj if isinstance(obj, Connection) else Connection(DEFAULT_ADMIN, "", False)
    return Connection(admin or root.admin, token if token is not None else root.token, as_json or root.as_json)


def connected(command: Callable[..., None]) -> Callable[..., None]:
    """A command of the admin API: it takes `conn: Connection` in place of the options every such
    command has (`--admin`, `--token`, `--json`, given after the command or before it), which this
    adds to its command line."""
    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "conn"]  # fmt: skip
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *own,
        inspect.Parameter("admin", keyword, default=None, annotation=AdminOption),
        inspect.Parameter("token", keyword, default=None, annotation=TokenOption),
        inspect.Parameter("as_json", keyword, default=False, annotation=JsonOption),
    ]

    @functools.wraps(command)
    def run(ctx: typer.Context, *args: Any, admin: str | None, token: str | None, as_json: bool, **kwargs: Any) -> None:
        command(*args, conn=connection_for(ctx, admin, token, as_json), **kwargs)

    del run.__wrapped__  # typer reads the signature below, not the command's
    run.__signature__ = inspect.Signature(added)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in added} | {"return": None}
    return run


def show(conn: Connection, response: M, view: Callable[[M], Table | None]) -> None:
    """The answer as JSON under --json, else the table `view` makes of it (None: it printed its own)."""
    if conn.as_json:
        print_json(response)
    elif (table := view(response)) is not None:
        show_table(table)


class TransientError(Exception):
    """The admin API did not answer (unreachable, or past the call's deadline): worth asking again."""


@contextmanager
def admin_stub(
    conn: Connection, transient: bool = False
) -> Iterator[tuple[admin_pb2_grpc.GatewayAdminStub, tuple[tuple[str, str], ...]]]:
    """The admin API's stub and the metadata every call sends (no token: none, so the gateway can
    tell a missing token from a wrong one). An error exits 1 with what to do about it (as JSON on
    stderr under --json); with `transient`, UNAVAILABLE and DEADLINE_EXCEEDED raise
    TransientError instead, for a caller that asks again."""
    metadata = (("authorization", f"Bearer {conn.token}"),) if conn.token else ()
    with grpc.insecure_channel(conn.admin) as channel:
        try:
            yield admin_pb2_grpc.GatewayAdminStub(channel), metadata
        except grpc.RpcError as exc:
            if transient and exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise TransientError(exc.details() or exc.code().name) from exc
            code = exc.code().name if exc.code() else "UNKNOWN"
            message = explain(exc, conn.admin)
            if conn.as_json:
                typer.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
            else:
                typer.echo(f"error: {code}: {message}", err=True)
            raise typer.Exit(1) from exc


def explain(exc: grpc.RpcError, address: str) -> str:
    """The admin API's answer, or what the transport said, in words a person can act on."""
    details = exc.details() or ""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:  # gRPC's own transport text
        return (f"cannot reach the admin API at {address} ({details.rpartition(': ')[2] or details}): is the "
                f"gateway running with its admin API there? (--admin HOST:PORT or env GATEWAY_ADMIN)")  # fmt: skip
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (f"{address} does not serve the admin API ({details}): is it the gateway's data port? The admin "
                "API listens on admin.listen in the config, or --admin-port")  # fmt: skip
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{details}: give the admin token with --token or env GATEWAY_ADMIN_TOKEN"
    return details


def call(conn: Connection, rpc: Callable[[admin_pb2_grpc.GatewayAdminStub, Any], Any], transient: bool = False) -> Any:
    with admin_stub(conn, transient) as (stub, metadata):
        return rpc(stub, metadata)


def read_bytes(path: Path) -> bytes:
    """A file the command was given; a usage error naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, every field present (a zero error or count included)."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _narrowest(table: Table) -> int:
    """The width `table` needs to wrap its cells at words without cutting one: each column's
    longest word (header included), its padding, and the borders."""

    def words(cell: object) -> list[str]:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return text.split()

    width = len(table.columns) + 1
    for column in table.columns:
        cells = [column.header, *column.cells]
        width += max((len(word) for cell in cells for word in words(cell)), default=1) + 2
    return width


def show_table(table: Table) -> None:
    """Print `table`, its cells wrapped at words; when even that does not fit the terminal (80
    columns off one), each row instead as its own list of column and value, as psql's expanded
    display does: nothing is cut to `clas…`."""
    if not table.row_count or _narrowest(table) <= console.width:
        console.print(table)
        return
    cells = [list(column.cells) for column in table.columns]
    for index in range(table.row_count):
        row = Table(title=f"{table.title or ''} [{index + 1}/{table.row_count}]".strip(), show_header=False)
        row.add_column("column", style="bold", no_wrap=True)
        row.add_column("value", overflow="fold")
        for column, values in zip(table.columns, cells, strict=True):
            row.add_row(column.header, values[index])
        console.print(row)


def print_json(message: Message) -> None:
    typer.echo(json.dumps(as_dict(message), indent=2, sort_keys=True))
