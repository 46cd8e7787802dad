"""A simulated client's state on disk, outside Flower's `Context`.

Under Flower's Simulation Engine a node's `context.state` lives in the
driver and travels to the client actor and back with every message. With
error feedback that is the whole residual (a model's worth of floats, 490 KB
per ML-1M client): twice per message through Ray, and 6,040 of them held in
the driver. So a simulated ClientApp keeps its state here instead, one
folder per partition under `RUN_DIR/client-state/`, read when a message
arrives and written after a training round (beside its name, then renamed,
so never half-written); the Context stays empty (`client-state-dir` puts
the store elsewhere, e.g. on a RAM-backed /dev/shm). Memory is bounded by the
clients in flight; the disk holds one version per client (the run removes
the store when it ends, unless it checkpoints).

A client reads its newest version from before the current round (for
training) or from up to it (for evaluation after training). With `checkpoint-every = k` the version
a resume may need is kept too: the newest one from no later than the last
checkpoint the server can have written, round k * floor((round - 1) / k); a
resumed run first drops the versions written after its checkpoint (`rewind`),
whose rounds it runs again. The in-process engine keeps its clients' state in
memory and uses this store only to checkpoint. Under the Deployment Engine
clients keep their own state and this is off.

That is the "files" store. With `client-state-store = "mapped"` (what
`"auto"` picks for a run on one machine without checkpoints, when the state
fits in memory: `resolve`) the state lives instead in shared memory, two
versions per partition (`client.state_slots`), and no state is copied
through the kernel.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from prunus.client import state_slots
from prunus.client.state_format import pack, unpack
from prunus.common.config import Config
from prunus.common.models import model_spec
from prunus.common.payload import Content

STORE = "client-state"
SUFFIX = ".state"  # a version's file (its bytes: `client.state_format`)
SHARED_MEMORY = "/dev/shm"


def store_of(cfg: Config) -> Path:
    """RUN_DIR/client-state, or with `client-state-dir` a folder there named
    for the run's folder (the same for a resumed run, another for another run);
    a mapped store's `client-state-dir` is /dev/shm unless set."""
    state_dir = cfg.runtime.client_state_dir
    if _mapped(cfg) and not state_dir:
        state_dir = SHARED_MEMORY
    return _store(cfg.runtime.out, state_dir)


def _mapped(cfg: Config) -> bool:
    return cfg.runtime.client_state_store == "mapped"


@functools.lru_cache(maxsize=8)
def _store(out: str, state_dir: str) -> Path:
    """`store_of`, worked out once per run: every client message asks for it."""
    if not state_dir:
        return Path(out) / STORE
    run = Path(out).resolve()
    digest = hashlib.sha256(str(run).encode()).hexdigest()[:16]
    return Path(state_dir) / f"prunus-{run.name}-{digest}"


def last_checkpoint(cfg: Config, server_round: int) -> int:
    """The last round the server can have checkpointed before `server_round`."""
    every = cfg.runtime.checkpoint_every
    return every * ((server_round - 1) // every)


def _versions(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(name[: -len(SUFFIX)]) for name in names if name.endswith(SUFFIX))


def load(store: Path, partition: int, upto: int, only: tuple[str, ...] | None = None) -> Content | None:
    """The partition's latest state written in round `upto` or before (with
    `only`, just those records)."""
    folder = store / str(partition)
    usable = [v for v in _versions(folder) if v <= upto]
    if not usable:
        return None
    path = folder / f"{usable[-1]}{SUFFIX}"
    with open(path, "rb") as handle:
        return unpack(handle.read, str(path), lambda n: handle.seek(n, os.SEEK_CUR), only)


def save(store: Path, partition: int, server_round: int, state: Content, upto: int) -> None:
    """Write the state after `server_round`; drop versions older than the one a
    resume from checkpoint `upto` (or any later) would read.

    The new version is written over the file of one this write makes
    obsolete (renamed aside first, so never read half-written): on this disk
    overwriting a file's blocks took a third of the time of a new file's
    (0.07 ms against 0.23 ms for 800 KB, and 0.07 ms more to delete the old one)."""
    folder = store / str(partition)
    versions = _versions(folder)
    if not versions:
        folder.mkdir(parents=True, exist_ok=True)
    needed = sorted({v for v in versions if v <= upto} | ({server_round} if server_round <= upto else set()))
    keep = needed[-2:]  # and the one before: a retried batch re-runs its clients from it
    obsolete = [v for v in versions if keep and v < keep[0]]
    head, blobs = pack(state)
    partial = folder / f".{server_round}.{os.getpid()}.partial"
    with open(partial, "r+b" if obsolete and _recycle(folder, obsolete.pop(), partial) else "wb") as handle:
        for blob in (head, *blobs):
            handle.write(blob)
        handle.truncate()
    os.replace(partial, folder / f"{server_round}{SUFFIX}")
    for version in obsolete:
        _drop(folder / f"{version}{SUFFIX}")


def _recycle(folder: Path, version: int, partial: Path) -> bool:
    """Take an obsolete version's file as the one to write; False if it is
    gone (another writer took it, or it was already deleted)."""
    try:
        os.replace(folder / f"{version}{SUFFIX}", partial)
    except FileNotFoundError:
        return False
    return True


# Freeing a written file's blocks is slow on a disk mounted with `discard`
# (a large share of a top-k client's message), and no one waits for an old
# version to go, so a thread of the client's own process deletes them.
_deleter: ThreadPoolExecutor | None = None
_pending: list[Future] = []


def _drop(path: Path) -> None:
    global _deleter
    if _deleter is None:
        _deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunus-state-drop")
    _pending[:] = [f for f in _pending if not f.done()]
    _pending.append(_deleter.submit(path.unlink, missing_ok=True))


def settle() -> None:
    """Wait until every old version this process dropped is deleted."""
    for future in list(_pending):
        future.result()
    _pending.clear()


def restore(cfg: Config, state: Content, partition: int, upto: int, only: tuple[str, ...] | None = None) -> None:
    """Fill an empty `state` from the store: the newest version from round `upto`
    or before (a simulated client, or a resumed run's); with `only`, just
    those records (what a message that does not write the state reads)."""
    if len(state):
        return
    loaded = (state_slots.load if _mapped(cfg) else load)(store_of(cfg), partition, upto, only)
    for record in loaded or {}:
        state[record] = loaded[record]


def persist(cfg: Config, state: Content, partition: int, server_round: int, n_items: int) -> None:
    """Keep the state a training round left; older versions nobody will read go."""
    if not len(state):
        return
    if _mapped(cfg):
        state_slots.save(store_of(cfg), partition, server_round, state, room(cfg, n_items))
        return
    save(store_of(cfg), partition, server_round, state, server_round if not cfg.runtime.checkpoint_every
         else last_checkpoint(cfg, server_round))


def rewind(cfg: Config, server_round: int) -> None:
    """Drop every version written after `server_round` (a resume from its checkpoint)."""
    for folder in store_of(cfg).glob("*"):
        for version in _versions(folder):
            if version > server_round:
                (folder / f"{version}{SUFFIX}").unlink(missing_ok=True)


# what a state holds besides an error-feedback residual (the private user
# vectors of a partition of one user, the headers), with room to spare
_SMALL_STATE = 16 * 1024


def room(cfg: Config, n_items: int) -> int:
    """The bytes one partition's state may come to: the private vectors and,
    where the uplink keeps a residual, a model's worth of float32."""
    c = cfg.compression
    if not (c.error_feedback and c.prune_method != "none"):
        return _SMALL_STATE
    return _SMALL_STATE + 4 * sum(math.prod(shape) for shape in model_spec(cfg.model, n_items).shapes.values())


# the share of the free memory (and of /dev/shm's free space) a mapped store
# may take. Its pages stay in memory for the whole run (shared memory has no
# disk behind it): two versions of a model-sized residual for each of
# thousands of clients can hold half a machine's memory, where the files
# store leaves the kernel free to write them out. What mapping saves (a
# fraction of a millisecond a save or load: benchmarks/results/) is not
# worth that.
MEMORY_SHARE = 0.25


def resolve(cfg: Config, partitions: int, n_items: int) -> Config:
    """`cfg` with `client-state-store = "auto"` made concrete: "mapped" for a
    run on this machine only (no `ray-address`) without checkpoints on Linux,
    when two versions of every partition's state (`room`; times `ray-share`,
    the runs sharing the machine) fit in
    `MEMORY_SHARE` of both the free memory and /dev/shm's free space (or of
    `client-state-dir`'s), else "files". A mapped store is signed by this
    process (`state_slots.claim`)."""
    runtime = cfg.runtime
    choice = runtime.client_state_store
    if choice == "auto":
        local = not (runtime.ray_address or os.environ.get("RAY_ADDRESS"))
        place = Path(runtime.client_state_dir or SHARED_MEMORY)
        need = runtime.ray_share * partitions * 2 * room(cfg, n_items)  # (runs sharing the machine: as many)
        fits = place.is_dir() and need <= MEMORY_SHARE * min(
            shutil.disk_usage(place).free, _available_memory())
        choice = "mapped" if sys.platform == "linux" and local and not runtime.checkpoint_every and fits \
            else "files"
    resolved = cfg.replace(client_state_store=choice)
    if choice == "mapped":
        state_slots.claim(store_of(resolved))
    return resolved


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo, in bytes (0 where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
