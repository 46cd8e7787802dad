"""A simulated client's state in shared memory: one mapped file per
partition, holding two versions ("slots").

Why: with one file per version a top-k client copied its residual (about
950 KB on ML-1M at d=64) into the kernel with `write` and back with `read`
on every message, a fifth of a client actor's CPU in a top-k run. Here each
client actor maps a partition's file once (on /dev/shm, unless
`client-state-dir` says where) and copies a state in and out with plain
memory copies.

A save writes over the slot whose version nothing needs any more (the newest
one from before this round stays: a retried message starts from it), and
marks the slot empty while it writes, so an actor killed mid-write leaves the
other version readable. Loads and saves hold the file's lock (`flock`), so no
actor reads a slot another is writing. A file is allocated whole when made
(`posix_fallocate`): a full /dev/shm is an error naming the file then, not a
SIGBUS in the middle of a copy. A state larger than its slot moves the
partition to a larger file. Two versions only: a run that checkpoints keeps
its clients' state in version files (`client.state_store`), which keep what a
resume needs.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import shutil
import socket
import struct
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prunus.client.state_format import pack, unpack
from prunus.common.payload import Content

SUFFIX = ".slots"
OWNER = "owner"  # "host pid" of the driver whose run the store belongs to
_MAGIC = b"prunus-slots-v1\0"
_SLOTS = 2
_HEAD = 4096  # magic (16), capacity (u64), then per slot: version (i64; -1 empty), length (u64)
_SLOT_AT = 24
_EMPTY = -1
_ALIGN = 1 << 16  # slot capacities are whole multiples of 64 KiB
# mappings one process keeps (least recently used go first); Linux allows
# 65,530 per process by default
MAX_MAPS = 16384

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass
class _Map:
    """One process's mapping of a partition's file (by libc, not `mmap.mmap`,
    which would hold a duplicate descriptor per file: thousands per actor)."""

    ino: int
    size: int
    address: int
    view: memoryview

    @property
    def capacity(self) -> int:
        return struct.unpack_from("<Q", self.view, len(_MAGIC))[0]

    def slots(self) -> list[tuple[int, int]]:
        """(version, length) of each slot."""
        return [struct.unpack_from("<qQ", self.view, _SLOT_AT + 16 * i) for i in range(_SLOTS)]

    def mark(self, slot: int, version: int, length: int) -> None:
        struct.pack_into("<qQ", self.view, _SLOT_AT + 16 * slot, version, length)

    def data(self, slot: int, length: int) -> memoryview:
        start = _HEAD + slot * self.capacity
        return self.view[start:start + length]


_maps: OrderedDict[str, _Map] = OrderedDict()


def _map(path: Path, fd: int, st: os.stat_result) -> _Map:
    """This process's mapping of the file open as `fd` (made once, kept while
    the file is the same)."""
    key = str(path)
    known = _maps.get(key)
    if known is not None and known.ino == st.st_ino and known.size == st.st_size:
        _maps.move_to_end(key)
        return known
    if known is not None:
        _unmap(key)
    # mapped through a descriptor of its own: a mapping keeps its open file
    # alive, and with it any lock taken through that file
    own = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
    try:
        address = _libc.mmap(None, st.st_size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, own, 0)
    finally:
        os.close(own)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), f"cannot map client state {path}: {os.strerror(ctypes.get_errno())}")
    view = memoryview((ctypes.c_char * st.st_size).from_address(address)).cast("B")
    _maps[key] = _Map(st.st_ino, st.st_size, address, view)
    while len(_maps) > MAX_MAPS:
        _unmap(next(iter(_maps)))
    return _maps[key]


def _unmap(key: str) -> None:
    m = _maps.pop(key)
    m.view.release()  # (no view of it may outlive this: each read copies its bytes out)
    _libc.munmap(m.address, m.size)


def forget() -> None:
    """Drop this process's mappings (a store removed, or a test's end)."""
    for key in list(_maps):
        _unmap(key)


@contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[tuple[int, os.stat_result] | None]:
    """The partition's file open and locked, with its status; None if there
    is none (and for a shared lock, if it is still being made)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if exclusive else 0), 0o600)
        except FileNotFoundError:
            if exclusive:  # its folder is gone
                raise
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            st = os.fstat(fd)
            if st.st_nlink == 0:  # moved to a larger file (or removed) while this one waited: open again
                continue
            yield (fd, st) if exclusive or st.st_size else None
            return
        finally:
            os.close(fd)  # and with it the lock


def _path(store: Path, partition: int) -> Path:
    return store / f"{partition}{SUFFIX}"


def load(store: Path, partition: int, upto: int, only: tuple[str, ...] | None = None) -> Content | None:
    """The partition's latest state written in round `upto` or before (with
    `only`, just those records)."""
    path = _path(store, partition)
    with _locked(path, exclusive=False) as opened:
        if opened is None:
            return None
        m = _map(path, *opened)
        usable = [(version, slot, length) for slot, (version, length) in enumerate(m.slots())
                  if _EMPTY < version <= upto]
        if not usable:
            return None
        _, slot, length = max(usable)
        data, at = m.data(slot, length), 0

        def read(n: int) -> bytes:
            nonlocal at
            chunk = bytes(data[at:at + n])
            at += len(chunk)
            return chunk

        def skip(n: int) -> None:
            nonlocal at
            at += n

        try:
            return unpack(read, f"{path} (slot {slot})", skip, only)
        finally:
            data.release()


def save(store: Path, partition: int, server_round: int, state: Content, room: int = 0) -> None:
    """Write the state after `server_round` over the slot nothing needs: the
    one holding this round's version (a retried message's), else an empty
    one, else the older. `room`: the bytes a state of this partition may come
    to (a new file's slots are made that large, so that it rarely moves)."""
    head, blobs = pack(state)
    size = len(head) + sum(len(blob) for blob in blobs)
    path = _path(store, partition)
    store.mkdir(parents=True, exist_ok=True)
    with _locked(path, exclusive=True) as (fd, st):
        if not st.st_size:
            st = _make(path, fd, _capacity(max(size, room)))
        m = _map(path, fd, st)
        if size <= m.capacity:
            _write(m, server_round, (head, *blobs), size)
            return
        with _grown(path, m, _capacity(size)) as grown:
            _write(grown, server_round, (head, *blobs), size)


def _write(m: _Map, server_round: int, blobs: tuple[bytes, ...], size: int) -> None:
    versions = [version for version, _ in m.slots()]
    slot = (versions.index(server_round) if server_round in versions
            else versions.index(_EMPTY) if _EMPTY in versions else versions.index(min(versions)))
    m.mark(slot, _EMPTY, 0)  # a writer killed from here on leaves the slot empty, not half-written
    target, at = m.data(slot, size), 0
    for blob in blobs:
        target[at:at + len(blob)] = blob
        at += len(blob)
    target.release()
    m.mark(slot, server_round, size)


def _capacity(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


def _make(path: Path, fd: int, capacity: int) -> os.stat_result:
    """Lay out an empty file of two slots of `capacity` bytes, allocated."""
    total = _HEAD + _SLOTS * capacity
    try:
        os.posix_fallocate(fd, 0, total)
    except OSError as err:
        os.ftruncate(fd, 0)
        free = shutil.disk_usage(path.parent).free
        raise OSError(err.errno, f"client state {path}: no room for {total:,} bytes ({free:,} free on its file "
                                 f"system); set client-state-store = \"files\" or another client-state-dir") from None
    header = _MAGIC + struct.pack("<Q", capacity) + struct.pack("<qQ", _EMPTY, 0) * _SLOTS
    os.pwrite(fd, header, 0)
    return os.fstat(fd)


@contextmanager
def _grown(path: Path, old: _Map, capacity: int) -> Iterator[_Map]:
    """The partition moved to a file with larger slots (both versions
    copied), locked until the caller has written to it; the old file's lock
    is held too, and whoever waits on it opens the new one."""
    grown = path.with_name(f".{path.name}.{os.getpid()}.grow")
    fd = os.open(grown, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        new = _map(grown, fd, _make(grown, fd, capacity))
        for slot, (version, length) in enumerate(old.slots()):
            if version != _EMPTY:
                target, source = new.data(slot, length), old.data(slot, length)
                target[:] = source
                target.release(), source.release()
                new.mark(slot, version, length)
        os.replace(grown, path)
        _unmap(str(path))  # the old file's mapping
        _maps[str(path)] = _maps.pop(str(grown))
        yield new
    finally:
        os.close(fd)


def claim(store: Path) -> None:
    """Make the run's store and sign it with this process (the driver), first
    removing the stores of runs on this host whose driver is gone: a killed
    run's store would otherwise hold its memory until the machine restarts."""
    host = socket.gethostname()
    for other in store.parent.glob("prunus-*"):
        try:
            owner_host, pid = (other / OWNER).read_text().split()
        except (OSError, ValueError):
            continue
        if owner_host == host and other != store and not _alive(int(pid)):
            shutil.rmtree(other, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    (store / OWNER).write_text(f"{host} {os.getpid()}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def size_of(store: Path) -> int:
    """Bytes the store holds in memory (its files' allocated blocks)."""
    return sum(path.stat().st_blocks * 512 for path in store.glob(f"*{SUFFIX}"))
