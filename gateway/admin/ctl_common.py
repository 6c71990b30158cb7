"""What every `gatewayctl` command shares: the app, where the admin API is, how to call it.

Connection options go before the command (`gatewayctl --admin A --token T rollout status M`,
as kubectl and docker users type them) or after it; the command's own win.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

from gateway_admin import admin_pb2_grpc

__all__ = [
    "DEFAULT_ADMIN",
    "AdminOption",
    "Connection",
    "JsonOption",
    "TokenOption",
    "admin_stub",
    "app",
    "as_dict",
    "call",
    "connection_for",
    "console",
    "print_json",
    "read_bytes",
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Control a running gateway through its admin API.")
console = Console()

AdminOption = Annotated[
    str | None, typer.Option("--admin", help="Admin API HOST:PORT [env GATEWAY_ADMIN].", show_default=False)
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin bearer token [env GATEWAY_ADMIN_TOKEN].", show_default=False)
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


@contextmanager
def admin_stub(conn: Connection) -> Iterator[tuple[admin_pb2_grpc.GatewayAdminStub, tuple[tuple[str, str]]]]:
    with grpc.insecure_channel(conn.admin) as channel:
        try:
            yield admin_pb2_grpc.GatewayAdminStub(channel), (("authorization", f"Bearer {conn.token}"),)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            typer.echo(f"error: {code}: {exc.details()}", err=True)
            raise typer.Exit(1) from exc


def call(conn: Connection, rpc: Callable[[admin_pb2_grpc.GatewayAdminStub, Any], Any]) -> Any:
    with admin_stub(conn) as (stub, metadata):
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


def print_json(message: Message) -> None:
    typer.echo(json.dumps(as_dict(message), indent=2, sort_keys=True))
