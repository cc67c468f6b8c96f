"""Immutable generations on disk, switched atomically: the embedded index's durability.

    INDEX/
      LOCK                 held (flock) by the one writer
      CURRENT              "gen-000007": the generation readers open
      gen-000007/          one complete save: manifest.json + whatever files the index writes

`commit` writes a complete new generation into a staging directory, fsyncs
it, renames it into place, then atomically replaces CURRENT (write, fsync,
rename, fsync the directory). A crash at any point leaves CURRENT naming the
previous complete generation. Older generations and leftovers of killed
writers are deleted after the commit.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

CURRENT = "CURRENT"


class IndexLockedError(RuntimeError):
    """Another process has this index open for writing."""


class Generations:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return (self.path / CURRENT).is_file()

    def lock(self):
        """Take the writer's lock (an open file: closing it releases the lock)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path / "LOCK", "a+")  # noqa: SIM115 - held for as long as the index is open
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            lock_file.close()
            raise IndexLockedError(f"{self.path} is open for writing by another process") from error
        return lock_file

    def current(self) -> tuple[Path, dict]:
        """The directory and manifest of the generation CURRENT names."""
        if not self.exists():
            raise FileNotFoundError(f"no mmserve index at {self.path} (create one with `mmserve index`)")
        directory = self.path / (self.path / CURRENT).read_text().strip()
        return directory, json.loads((directory / "manifest.json").read_text())

    def commit(self, number: int, manifest: dict, write: Callable[[Path], None]) -> Path:
        """Generation `number`: `write(directory)` fills it, then it becomes CURRENT. Returns its directory."""
        name = f"gen-{number:06d}"
        staging = self.path / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        write(staging)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for file in staging.iterdir():
            _fsync(file)
        _fsync(staging)
        # A writer killed after this rename but before the commit below leaves an uncommitted `name` behind;
        # CURRENT never pointed at it, so no reader can have it open.
        shutil.rmtree(self.path / name, ignore_errors=True)
        staging.rename(self.path / name)
        _fsync(self.path)
        pointer = self.path / f".{CURRENT}.tmp"
        pointer.write_text(name + "\n")
        _fsync(pointer)
        os.replace(pointer, self.path / CURRENT)  # the commit point
        _fsync(self.path)
        for old in self.path.iterdir():
            if old.name != name and (old.name.startswith("gen-") or old.name.endswith(".tmp")):
                shutil.rmtree(old, ignore_errors=True)
        return self.path / name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
