"""A local Redis Cluster of redis-server processes on loopback ports.

Used by the cluster tests (the ``cluster`` fixture), the scaling benchmark and
``python3 dev.py cluster``::

    with LocalCluster(masters=3, replicas=1) as cluster:
        print(cluster.url)            # redis+cluster://127.0.0.1:<port>

Each node runs with ``--cluster-enabled yes`` and nothing on disk; the nodes are
joined with ``redis-cli --cluster create``. Only the standard library and the
two binaries are needed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ClusterNode", "LocalCluster", "free_ports"]


def free_ports(count: int) -> list[int]:
    """COUNT free loopback ports whose cluster bus ports (port + 10000) are free
    too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _command(port: int, *args: str, timeout: float = 5.0) -> str:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is not installed"
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout.strip()


class ClusterNode:
    """One redis-server of the cluster."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.directory / "nodes.conf"),
                "--cluster-node-timeout",
                "1500",
                # a lone node never learns its address from a peer (1 master)
                "--cluster-announce-ip",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, deadline: float) -> None:
        while _command(self.port, "PING", timeout=1.0) != "PONG":
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server {self.address} exited: {log[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server {self.address} did not start")
            time.sleep(0.05)  # polling the server's readiness

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies without a word, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def role(self) -> str:
        """``master`` or ``slave`` (from ROLE), or ``down``."""
        if not self.running:
            return "down"
        reply = _command(self.port, "ROLE", timeout=2.0)
        return reply.splitlines()[0] if reply else "down"

    def __repr__(self) -> str:
        return f"ClusterNode({self.address})"


class LocalCluster:
    """MASTERS masters with REPLICAS replicas each, on free loopback ports."""

    def __init__(
        self, masters: int = 3, replicas: int = 1, directory: Path | None = None
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs one master or more")
        self.masters = masters
        self.replicas = replicas
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="backbone-cluster-")
            directory = Path(self._tmp.name)
        self.directory = directory
        count = masters * (1 + replicas)
        self.nodes = [
            ClusterNode(port, directory / str(port)) for port in free_ports(count)
        ]

    @property
    def url(self) -> str:
        """The URL backbone takes: one node, named as a cluster's."""
        return f"redis+cluster://{self.nodes[0].address}"

    @property
    def seed(self) -> ClusterNode:
        """A running node (to ask the cluster things)."""
        return next(node for node in self.nodes if node.running)

    def start(self, timeout: float = 60.0) -> Self:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready(deadline)
            if self.masters == 1 and self.replicas == 0:
                self._assign_all_slots()
            else:
                self._create()
            self.wait_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli is not installed"
        done = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}")

    def _assign_all_slots(self) -> None:
        # redis-cli --cluster create wants 3 masters; one node takes every slot.
        port = self.nodes[0].port
        _command(port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok, every master that
        should have replicas has them, every replica has finished its sync with
        its master (one that never did is not promoted when its master dies, and
        the cluster stays down), and no slot is being moved."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                _command(node.port, "CLUSTER", "INFO", timeout=1.0)
                for node in self.nodes
                if node.running
            ]
            if states and all("cluster_state:ok" in s for s in states):
                masters = self.master_nodes()
                if (
                    len(masters) == self.masters
                    and all(
                        len(self.replicas_of(m)) >= min(self.replicas, 1)
                        for m in masters
                        if self._expects_replica(m)
                    )
                    and self._replicating()
                ):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster is not healthy: {states}")
            time.sleep(0.1)  # polling the cluster's state

    def _replicating(self) -> bool:
        """True when every running replica's link to its master is up."""
        for node in self.nodes:
            if not node.running:
                continue
            info = _command(node.port, "INFO", "replication", timeout=1.0)
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def _expects_replica(self, master: ClusterNode) -> bool:
        running = sum(1 for node in self.nodes if node.running)
        return self.replicas > 0 and running > self.masters

    def _nodes_table(self) -> list[list[str]]:
        reply = _command(self.seed.port, "CLUSTER", "NODES", timeout=2.0)
        return [line.split() for line in reply.splitlines() if line.strip()]

    def master_nodes(self) -> list[ClusterNode]:
        """The running nodes that are masters now."""
        by_address = {node.address: node for node in self.nodes}
        masters = []
        for row in self._nodes_table():
            address = row[1].split("@")[0]
            node = by_address.get(address)
            if (
                node is not None
                and node.running
                and "master" in row[2]
                and "fail" not in row[2]
            ):
                masters.append(node)
        return masters

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        table = self._nodes_table()
        ids = {row[1].split("@")[0]: row[0] for row in table}
        master_id = ids.get(master.address)
        by_address = {node.address: node for node in self.nodes}
        return [
            by_address[row[1].split("@")[0]]
            for row in table
            if row[3] == master_id
            and row[1].split("@")[0] in by_address
            and by_address[row[1].split("@")[0]].running
            and "fail" not in row[2]
        ]

    def master_of_key(self, key: str) -> ClusterNode:
        slot = int(_command(self.seed.port, "CLUSTER", "KEYSLOT", key))
        for row in self._nodes_table():
            if "master" not in row[2] or "fail" in row[2]:
                continue
            for part in row[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    address = row[1].split("@")[0]
                    return next(n for n in self.nodes if n.address == address)
        raise LookupError(f"no master holds slot {slot} of {key!r}")

    def wait_promoted(self, dead: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """After DEAD (a master) was killed: until one of its replicas is master
        and the cluster is ok again; that replica."""
        deadline = time.monotonic() + timeout
        replica_ids = set()
        for row in self._nodes_table():
            if row[1].split("@")[0] == dead.address:
                dead_id = row[0]
                replica_ids = {r[0] for r in self._nodes_table() if r[3] == dead_id}
        while True:
            table = self._nodes_table()
            for row in table:
                if (
                    row[0] in replica_ids
                    and "master" in row[2]
                    and "fail" not in row[2]
                ):
                    address = row[1].split("@")[0]
                    states = [
                        _command(n.port, "CLUSTER", "INFO", timeout=1.0)
                        for n in self.nodes
                        if n.running
                    ]
                    if all("cluster_state:ok" in s for s in states):
                        return next(n for n in self.nodes if n.address == address)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica of {dead} was promoted")
            time.sleep(0.1)  # polling the cluster's state

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py cluster",
        description="Start a local Redis Cluster on loopback ports until Ctrl-C.",
    )
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print(
            "redis-server and redis-cli are needed; on Debian or Ubuntu: "
            "apt-get install redis-server",
            file=sys.stderr,
        )
        return 1
    if args.masters < 3 and not (args.masters == 1 and args.replicas == 0):
        print("a cluster needs 3 masters or more (or --masters 1 --replicas 0)")
        return 2
    # A handler, not a blocked signal mask: the servers inherit a blocked mask
    # through exec and would then ignore stop()'s SIGTERM.
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    cluster = LocalCluster(args.masters, args.replicas)
    try:
        cluster.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"the cluster did not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"Redis Cluster of {args.masters} master(s) and {args.replicas} "
            f"replica(s) each is up:",
            flush=True,
        )
        for node in cluster.nodes:
            print(f"  {node.address}  {node.role()}")
        print(f"\n  backbone demo --redis-url {cluster.url}\n")
        print("Ctrl-C stops it and removes its files.", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
