"""Run one function over many shards of work: on local processes, or on a Dask cluster.

`run(fn, tasks, jobs)` returns `[fn(t) for t in tasks]`, in the tasks' order, whichever
engine computes it, so what a stage writes from the results is the same bytes on one
machine or on a cluster. The engine is the machine's, not the data's: it is chosen by the
environment, never by params.yaml (a change of engine must not change dvc.lock).

- Default: `jobs` local processes (`jobs: 1` runs in this process).
- `LLAVA_DATA_CLUSTER=tcp://<scheduler>:8786`: the Dask cluster whose scheduler listens
  there (`dask scheduler`, `dask worker tcp://...`, or any Dask deployment). Its workers
  must run this repository's environment with the repository on PYTHONPATH and see the
  data at the same path (a shared file system), since the tasks carry paths, not bytes.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from llava_data.common import StageError

CLUSTER_VAR = "LLAVA_DATA_CLUSTER"
DASK_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def cluster_address() -> str | None:
    """The cluster named by the environment, checked (None: local processes)."""
    address = os.environ.get(CLUSTER_VAR, "").strip()
    if not address:
        return None
    if not address.startswith(DASK_SCHEMES):
        raise StageError(
            f"{CLUSTER_VAR}={address!r} is not a Dask scheduler address: give it as "
            f"tcp://<host>:<port> (what `dask scheduler` prints), or unset it to run on this "
            f"machine's processes"
        )
    return address


def describe(jobs: int) -> str:
    address = cluster_address()
    return f"the Dask cluster at {address}" if address else f"{jobs} local process(es)"


def run(fn: Callable[[Any], Any], tasks: Sequence[Any], jobs: int) -> list[Any]:
    """`[fn(t) for t in tasks]`, computed where the environment says."""
    address = cluster_address()
    if address is not None:
        return _on_dask(fn, tasks, address)
    if jobs <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def _on_dask(fn, tasks, address: str) -> list[Any]:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is pinned in requirements.lock
        raise StageError("the Dask engine needs `distributed`: run `make env`") from None
    try:
        parts = urlsplit(address)
        if parts.scheme in ("tcp", "tls") and parts.hostname and parts.port:
            # a closed port is refused at once, where the client would retry for its timeout
            socket.create_connection((parts.hostname, parts.port), timeout=10).close()
        client = Client(address, timeout="30s", set_as_default=False)
    except (OSError, ValueError) as err:
        raise StageError(
            f"{CLUSTER_VAR}={address}: no Dask scheduler answers there ({err}). Start one "
            f"(`dask scheduler` and `dask worker {address}`), or unset {CLUSTER_VAR} to run "
            f"on this machine's processes"
        ) from None
    with client:
        workers = len(client.scheduler_info().get("workers", {}))
        print(f"engine: {len(tasks)} task(s) on {address} ({workers} worker(s))", file=sys.stderr)
        futures = client.map(fn, list(tasks), pure=False)
        return client.gather(futures)
