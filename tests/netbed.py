"""A multi-host test bed on one machine: test hosts in network namespaces the tests make themselves.

Every host is a namespace with one interface per LAN it is on (`eth0` on the front LAN,
10.213.<bed>.0/24; `eth1` on the back LAN, 10.214.<bed>.0/24), each the veth peer of a port of that
LAN's bridge, both bridges living in a namespace of their own (the switch), so the hosts reach each
other and nothing else. The test runner joins the front LAN through a veth of its own (holding only
the bed's front /24), so tests speak gRPC to the hosts directly. A partition is a host's switch port
set down (all its ports, or its port on one LAN: a gateway cut from a Redis that only the back LAN
reaches, still serving its clients); a frozen host is its processes sent SIGSTOP; a dead one
SIGKILL. Everything the bed made (namespaces, links, processes) is removed however the test ends;
a bed that cannot be made (not root, no `ip`) fails with the reason, never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BACK", "FRONT", "Host", "NetBed", "running_bed"]

IP = shutil.which("ip") or "/usr/sbin/ip"
FRONT, BACK = "front", "back"
_LANS = {FRONT: (0, 213), BACK: (1, 214)}  # LAN: (its bridge br<N> and the host's eth<N>, subnet's 2nd byte)


class NetBedError(RuntimeError):
    """The bed cannot be built here (the message says why)."""


def _ip(*args: str, namespace: str | None = None) -> None:
    command = [IP, *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    if done.returncode != 0:
        raise NetBedError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


@dataclass
class Host:
    """One test host: its namespace, its address, and the processes started in it."""

    name: str
    namespace: str
    addresses: dict[str, str]  # LAN: the host's address on it
    ports: dict[str, str]  # LAN: its switch-side veth, in the switch namespace
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Its address on the front LAN (the one the runner is on)."""
        return self.addresses[FRONT]

    def popen(self, command: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """`command` run inside the host (its own process group, so a freeze or a kill takes its
        children too), stdout and stderr to `log`."""
        with log.open("ab") as out:
            process = subprocess.Popen([IP, "netns", "exec", self.namespace, *command], stdout=out, stderr=out,
                                       start_new_session=True, cwd=cwd)  # fmt: skip
        self.processes.append(process)
        return process

    def signal(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signum)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        for process in self.processes:
            process.wait(30)


class NetBed:
    """Hosts on one switch. `bed` keeps two beds (two test sessions) apart: 10.213.<bed>.0/24."""

    def __init__(self, bed: int | None = None) -> None:
        # Two beds at once (pytest-xdist's workers, each its own process) differ: by the worker's
        # parity, and by the pid beside it.
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
        self.bed = 20 + 2 * (os.getpid() % 100) + worker % 2 if bed is None else bed
        self.tag = f"gwb{self.bed}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._runner_link = f"{self.tag}-run"
        self._next = 10

    def subnet_address(self, last: int, lan: str = FRONT) -> str:
        return f"10.{_LANS[lan][1]}.{self.bed}.{last}"

    def build(self) -> None:
        if os.geteuid() != 0:
            raise NetBedError("the multi-host tests need root (network namespaces, veth, a bridge); CI runs as root")
        if not Path(IP).exists():
            raise NetBedError(f"no `ip` at {IP}: install Debian's iproute2")
        self.teardown()  # what a killed earlier run of the same bed left behind
        _ip("netns", "add", self.switch)
        for bridge, _ in _LANS.values():
            _ip("link", "add", f"br{bridge}", "type", "bridge", namespace=self.switch)
            _ip("link", "set", f"br{bridge}", "up", namespace=self.switch)
        # The runner's own port: the only address it gets is the bed's .1, on the bed's /24.
        _ip("link", "add", self._runner_link, "type", "veth", "peer", "name", "run", "netns", self.switch)
        _ip("addr", "add", f"{self.subnet_address(1)}/24", "dev", self._runner_link)
        _ip("link", "set", self._runner_link, "up")
        _ip("link", "set", "run", "master", f"br{_LANS[FRONT][0]}", namespace=self.switch)
        _ip("link", "set", "run", "up", namespace=self.switch)

    def add_host(self, name: str, lans: tuple[str, ...] = (FRONT,)) -> Host:
        """A host on `lans`, its address on each ending in the same number."""
        last, self._next = self._next, self._next + 1
        namespace = f"{self.tag}-{name}"
        _ip("netns", "add", namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        host = Host(name, namespace, {}, {})
        for lan in lans:
            bridge, _ = _LANS[lan]
            device, port = f"eth{bridge}", f"p{bridge}-{last}"
            _ip("link", "add", device, "netns", namespace, "type", "veth", "peer", "name", port, "netns", self.switch)
            _ip("addr", "add", f"{self.subnet_address(last, lan)}/24", "dev", device, namespace=namespace)
            _ip("link", "set", device, "up", namespace=namespace)
            _ip("link", "set", port, "master", f"br{bridge}", namespace=self.switch)
            _ip("link", "set", port, "up", namespace=self.switch)
            host.addresses[lan], host.ports[lan] = self.subnet_address(last, lan), port
        self.hosts[name] = host
        return host

    def partition(self, host: Host, lan: str | None = None) -> None:
        """The host cut off: from every LAN, or only from `lan`."""
        for on, port in host.ports.items():
            if lan in (None, on):
                _ip("link", "set", port, "down", namespace=self.switch)

    def heal(self, host: Host, lan: str | None = None) -> None:
        for on, port in host.ports.items():
            if lan in (None, on):
                _ip("link", "set", port, "up", namespace=self.switch)

    def teardown(self) -> None:
        """Every process, namespace and link of this bed, gone (errors ignored: it may be half made)."""
        for host in self.hosts.values():
            host.thaw()
            host.signal(signal.SIGKILL)
            for process in host.processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    print(f"netbed: {host.name}: process {process.pid} did not end", file=sys.stderr)
        listed = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=False).stdout
        for line in listed.splitlines():
            namespace = line.split()[0] if line.split() else ""
            if namespace.startswith(f"{self.tag}-"):
                pids = subprocess.run([IP, "netns", "pids", namespace], capture_output=True, text=True, check=False)
                for pid in pids.stdout.split():  # anything still inside (a child that left its group)
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                subprocess.run([IP, "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run([IP, "link", "del", self._runner_link], capture_output=True, check=False)


@contextmanager
def running_bed(bed: int | None = None) -> Iterator[NetBed]:
    net = NetBed(bed)
    try:
        net.build()
        yield net
    finally:
        net.teardown()
