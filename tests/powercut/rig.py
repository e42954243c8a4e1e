"""Drive the power-cut file system from a test: mount, cut, remount on what survived.

`PowerCutMount(directory)` keeps the surviving files in `directory/backing` and mounts them at
`directory/mnt` through `python -m tests.powercut.fs` (a separate process, as a disk is separate
from the machine). `cut()` is the instant the power goes: nothing reaches the backing directory
afterwards and every file operation on the mount fails. The caller kills its writers, then calls
`restart()`, which unmounts and mounts a fresh file system on the backing directory (a reboot).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def fuse_unavailable() -> str | None:
    """Why FUSE cannot be used here (None when a mount works); checked once per test run by a real mount."""
    return _probe()


@functools.cache
def _probe() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3; make system-deps)"
    try:
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 is not importable ({exc}); it needs libfuse3-dev and pkg-config to build"
    with tempfile.TemporaryDirectory(prefix="powercut-probe-") as tmp:
        mount = PowerCutMount(Path(tmp))
        try:
            mount.start()
            (mount.root / "probe").write_bytes(b"x")
        except Exception as exc:  # noqa: BLE001 - any failure means: no FUSE here
            return f"mounting a FUSE file system failed here: {exc}"
        finally:
            mount.stop()
    return None


def require_fuse() -> None:
    """Skip (never pass) the calling test when FUSE cannot be mounted, saying why."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"power-cut rig unavailable: {reason}")


class PowerCutMount:
    def __init__(self, directory: Path) -> None:
        self.backing = directory / "backing"
        self.root = directory / "mnt"
        self.control = directory / "powercut.sock"
        self.log = directory / "powercut-fs.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def start(self) -> PowerCutMount:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.powercut.fs", str(self.backing), str(self.root),
                 "--control", str(self.control)],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parents[2])
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"mounted":
            self.proc.wait(10)
            raise RuntimeError(f"power-cut fs did not mount (exit {self.proc.returncode}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        return self

    def command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.control))
            sock.sendall(command.encode() + b"\n")
            return sock.recv(256).decode().strip()

    def cut(self) -> None:
        """The power goes now: what was not synced is gone, every operation on the mount fails with EIO."""
        answer = self.command("cut")
        assert answer.startswith("ok"), answer
        self.cuts += 1

    def sync(self) -> None:
        """Everything written so far is kept (sync(2); the kernel's writeback after half a minute)."""
        answer = self.command("sync")
        assert answer.startswith("ok"), answer

    def arm(self, operations: int) -> None:
        """The power goes right after the `operations`-th next operation that changes something."""
        answer = self.command(f"arm {operations}")
        assert answer.startswith("ok"), answer

    @property
    def powered(self) -> bool:
        return "dead=0" in self.command("ping")

    def stop(self) -> None:
        """Unmount (the file system's memory goes with its process)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.command("exit")
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if os.path.ismount(self.root) or _stale_mount(self.root):
            subprocess.run(["fusermount3", "-u", "-z", str(self.root)], check=False, capture_output=True)

    def restart(self) -> None:
        """Reboot: unmount, then mount a fresh file system on the surviving backing directory."""
        self.stop()
        self.start()

    def __enter__(self) -> PowerCutMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stale_mount(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True  # "Transport endpoint is not connected": a server that died without unmounting
    return False

