"""The demo's streaming act: a producer writes sensor readings to a Redis Stream, `gateway stream`
predicts them through the gateway as they arrive, the predictions appear in another stream, and
the lag stays near zero. Needs Debian's `redis-server` (the Makefile installs it)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from gateway.local.redis_server import running_redis
from gateway.stream.entries import text_of

__all__ = ["tell_the_streaming_story"]

RATE = 200  # readings a second
SECONDS = 3.0


def tell_the_streaming_story(console: Console, gateway: str, workdir: Path) -> bool:
    """Readings in, predictions out: True when every reading was predicted once."""
    if shutil.which("redis-server") is None:
        console.print("[yellow]streaming act skipped: redis-server is missing (make demo installs it)[/]")
        return True
    console.rule("Streaming prediction: a Redis Stream predicted as it arrives (gateway stream)")
    with running_redis(workdir) as server:
        url = server.url
        client = redis.Redis.from_url(url)
        client.xgroup_create("readings", "gateway", id="0", mkstream=True)
        command = [sys.executable, "-m", "gateway", "stream", "--model", "identity_batched", "--input", "readings",
                   "--output", "predictions", "--redis", url, "--target", gateway]  # fmt: skip
        with (workdir / "stream.log").open("wb") as log:
            consumer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        table = Table(title=f"{RATE} readings a second into `readings`; `gateway stream` writing `predictions`")
        for column in ("second", "readings written", "predictions", "lag (unread)", "pending"):
            table.add_column(column)
        try:
            started, sent = time.monotonic(), 0
            while (elapsed := time.monotonic() - started) < SECONDS + 2.0:
                due = min(int(elapsed * RATE), int(SECONDS * RATE))
                pipe = client.pipeline(transaction=False)
                for n in range(sent, due):
                    pipe.xadd("readings", {"inputs": json.dumps({"INPUT0": [n / 10, n / 5]}), "sensor": f"s{n % 4}"})
                pipe.execute()
                sent = due
                if int(elapsed * 4) % 4 == 0:  # about once a second
                    group = client.xinfo_groups("readings")[0]
                    table.add_row(f"{elapsed:.1f}", str(sent), str(client.xlen("predictions")),
                                  str(group.get("lag") or 0), str(group.get("pending") or 0))  # fmt: skip
                time.sleep(0.25)
            deadline = time.monotonic() + 20
            while client.xlen("predictions") < sent and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
        console.print(table)
        last: Any = client.xrevrange("predictions", count=1)
        if last:
            console.print(f"the last prediction: {text_of(last[0][1])}")
        produced = client.xlen("predictions")
        console.print(f"{sent} readings, {produced} predictions, {client.xlen('readings:dead')} dead letters")
        return produced == sent
