"""A FUSE file system that forgets, on a power cut, exactly what a journaled file system may forget.

`python -m tests.powercut.fs BACKING MOUNTPOINT --control SOCKET` mounts MOUNTPOINT (pyfuse3, libfuse3).
While the power is on, the mount behaves as an ordinary local file system: every read sees every write.
What survives a cut is only what the backing directory holds, and it is updated only by syncs:

- **File data** written since the last fsync/fdatasync of a file lives in memory; the sync writes it
  (and the file's size and mode) to the backing file.
- **Namespace operations** (create, mkdir, symlink, unlink, rmdir, rename) go into one ordered journal.
  They reach the backing directory when committed, and a commit always takes a prefix of the journal,
  in order, as jbd2 commits transactions: fsync of a directory (fsyncdir) commits the journal up to
  the last operation that touched that directory; fsync of a file commits it up to the last operation
  that touched the file (its own creation or rename, as ext4 data=ordered does), then writes the data.
  A committed creation or rename carries only the data already synced: a temp file renamed into place
  without fsync of its data, whose rename is later committed by a directory fsync, is an empty file
  after a cut (the classic 0-byte file).

This is the strict POSIX reading (a real ext4 commits more at each fsync, and more often): what it
keeps, any journaled file system keeps. Hard links are refused (the station does not make any).

A cut is the control command `cut` on the control socket: from that instant every operation fails
with EIO and nothing more reaches the backing directory; the harness then kills the writers, stops
this process (`exit`, or SIGTERM) and mounts a fresh one on the surviving backing directory, which
starts with empty memory, as a rebooted machine. Commands are atomic with respect to file system
operations (one trio thread handles both). `arm N` cuts right after the Nth next operation that changes
something (a test walks N through every point of a write sequence). `ping` answers `ok` with whether
the power is off (`dead=1`) and the journal and dirty-file counts. `sync` commits everything, as
sync(2) or the kernel's periodic writeback would (a test's set-up that is not under test).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

PAGE = 4096
TIMEOUT = 1.0
"""Kernel entry/attribute cache lifetime (s): every change goes through this process, so the cache is never stale."""


@dataclass(eq=False)
class Node:
    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    entries: dict[bytes, Node] = field(default_factory=dict)
    """Live directory entries (what the running system sees)."""
    d_entries: dict[bytes, Node] = field(default_factory=dict)
    """Committed directory entries (what the backing directory holds)."""
    d_parent: Node | None = None
    d_name: bytes = b""
    dirty: set[int] = field(default_factory=set)
    """Pages written since the data last reached the backing file."""
    meta_dirty: bool = False
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Op:
    kind: str
    parent: Node
    name: bytes
    node: Node
    new_parent: Node | None = None
    new_name: bytes = b""
    replaced: Node | None = None

    def touches(self, node: Node) -> bool:
        return node is self.parent or node is self.node or node is self.new_parent or node is self.replaced


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class PowerCutFs(pyfuse3.Operations):
    def __init__(self, backing: Path) -> None:
        super().__init__()
        self.backing = backing
        self.nodes: dict[int, Node] = {}
        self.next_ino = pyfuse3.ROOT_INODE
        self.journal: list[Op] = []
        self.dead = False
        self.countdown: int | None = None
        """`arm N`: the power goes right after the Nth next changing operation (a cut at every point)."""
        self.root = self._new(stat.S_IFDIR | 0o755)
        self.root.d_parent = None
        self._load(self.root, backing)

    # ---- bookkeeping ---------------------------------------------------------------
    def _new(self, mode: int) -> Node:
        node = Node(self.next_ino, mode)
        self.nodes[node.ino] = node
        self.next_ino += 1
        return node

    def _load(self, directory: Node, path: Path) -> None:
        """The backing directory is the committed state; memory starts equal to it (a fresh boot)."""
        for entry in os.scandir(path):
            st = entry.stat(follow_symlinks=False)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            node = self._new(st.st_mode)
            node.mtime_ns = st.st_mtime_ns
            name = os.fsencode(entry.name)
            directory.entries[name] = directory.d_entries[name] = node
            node.d_parent, node.d_name = directory, name
            if stat.S_ISDIR(st.st_mode):
                self._load(node, Path(entry.path))
            elif stat.S_ISLNK(st.st_mode):
                node.target = os.fsencode(os.readlink(entry.path))
            else:
                node.data = bytearray(Path(entry.path).read_bytes())

    def _path(self, node: Node) -> bytes:
        """Where the committed `node` is in the backing directory."""
        parts = []
        while node is not self.root:
            assert node.d_parent is not None, "node has no committed name"
            parts.append(node.d_name)
            node = node.d_parent
        return os.path.join(os.fsencode(self.backing), *reversed(parts))

    def _live(self) -> None:
        if self.dead:
            raise fail(errno.EIO)

    def _node(self, ino: int) -> Node:
        self._live()
        try:
            return self.nodes[ino]
        except KeyError:
            raise fail(errno.ENOENT) from None

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.ino
        attr.generation = 0
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        attr.st_mode = node.mode
        attr.st_nlink = 2 + sum(1 for n in node.entries.values() if n.is_dir) if node.is_dir else 1
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        attr.st_rdev = 0
        size = len(node.target) if stat.S_ISLNK(node.mode) else len(node.data)
        attr.st_size = size
        attr.st_blksize = PAGE
        attr.st_blocks = (size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        return attr

    def _touch(self, node: Node) -> None:
        node.mtime_ns = time.time_ns()

    # ---- durability ----------------------------------------------------------------
    def _commit_through(self, node: Node) -> None:
        """Commit the journal up to (and including) the last operation that touched `node`."""
        last = max((i for i, op in enumerate(self.journal) if op.touches(node)), default=-1)
        for op in self.journal[:last + 1]:
            self._apply(op)
        del self.journal[:last + 1]

    def _apply(self, op: Op) -> None:
        if op.kind in ("create", "mkdir", "symlink"):
            path = os.path.join(self._path(op.parent), op.name)
            if op.kind == "create":
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(op.node.mode)))
                op.node.dirty = set(range((len(op.node.data) + PAGE - 1) // PAGE))  # nothing of it is there yet
                op.node.meta_dirty = True
            elif op.kind == "mkdir":
                os.mkdir(path, stat.S_IMODE(op.node.mode))
            else:
                os.symlink(op.node.target, path)
            op.parent.d_entries[op.name] = op.node
            op.node.d_parent, op.node.d_name = op.parent, op.name
        elif op.kind in ("unlink", "rmdir"):
            path = self._path(op.node)
            os.rmdir(path) if op.kind == "rmdir" else os.unlink(path)
            del op.parent.d_entries[op.name]
            op.node.d_parent = None
        elif op.kind == "rename":
            assert op.new_parent is not None
            source = self._path(op.node)
            os.replace(source, os.path.join(self._path(op.new_parent), op.new_name))
            del op.parent.d_entries[op.name]
            if op.replaced is not None:
                op.replaced.d_parent = None
            op.new_parent.d_entries[op.new_name] = op.node
            op.node.d_parent, op.node.d_name = op.new_parent, op.new_name

    def _flush_data(self, node: Node) -> None:
        if node.d_parent is None or not stat.S_ISREG(node.mode):
            return  # no committed name (unlinked): its data has nowhere to go
        if not node.dirty and not node.meta_dirty:
            return
        fd = os.open(self._path(node), os.O_WRONLY)
        try:
            size = len(node.data)
            for page in sorted(node.dirty):
                start = page * PAGE
                if start < size:
                    os.pwrite(fd, node.data[start:min(start + PAGE, size)], start)
            os.ftruncate(fd, size)
            os.fchmod(fd, stat.S_IMODE(node.mode))
        finally:
            os.close(fd)
        node.dirty.clear()
        node.meta_dirty = False

    def sync(self) -> None:
        """Everything reaches the backing directory (sync(2), or the kernel's writeback after a while)."""
        for op in self.journal:
            self._apply(op)
        self.journal.clear()
        for node in list(self.nodes.values()):
            self._flush_data(node)

    def cut(self) -> None:
        """Power off: nothing more reaches the backing directory, every operation fails."""
        self.dead = True
        self.journal.clear()

    def _step(self) -> None:
        """Called after each operation that changes something: the armed cut fires here."""
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.countdown = None
                self.cut()

    def counts(self) -> str:
        dirty = sum(1 for n in self.nodes.values() if n.dirty or n.meta_dirty)
        return f"dead={int(self.dead)} journal={len(self.journal)} dirty_files={dirty}"

    # ---- namespace ------------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        if name == b".":
            return self._attr(parent)
        try:
            return self._attr(parent.entries[name])
        except KeyError:
            raise fail(errno.ENOENT) from None

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            self._resize(node, attr.st_size)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
            node.meta_dirty = True
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        self._step()
        return self._attr(node)

    def _resize(self, node: Node, size: int) -> None:
        old = len(node.data)
        if size < old:
            del node.data[size:]
        else:
            node.data.extend(bytes(size - old))
        node.dirty.update(range(min(old, size) // PAGE, max(old, size) // PAGE + 1))
        node.meta_dirty = True
        self._touch(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self._node(inode).target

    def _add(self, kind: str, parent_inode: int, name: bytes, mode: int, target: bytes = b"") -> Node:
        parent = self._dir(parent_inode)
        if name in parent.entries:
            raise fail(errno.EEXIST)
        node = self._new(mode)
        node.target = target
        parent.entries[name] = node
        self._touch(parent)
        self.journal.append(Op(kind, parent, name, node))
        self._step()
        return node

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._add("mkdir", parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode)))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._add("symlink", parent_inode, name, stat.S_IFLNK | 0o777, target))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._add("create", parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode))
        return pyfuse3.FileInfo(fh=node.ino), self._attr(node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            raise fail(errno.EPERM)  # sockets and fifos hold no state worth a cut
        return self._attr(self._add("create", parent_inode, name, mode))

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise fail(errno.EPERM)

    def _remove(self, kind: str, parent_inode: int, name: bytes) -> None:
        parent = self._dir(parent_inode)
        node = parent.entries.get(name)
        if node is None:
            raise fail(errno.ENOENT)
        if kind == "rmdir":
            if not node.is_dir:
                raise fail(errno.ENOTDIR)
            if node.entries:
                raise fail(errno.ENOTEMPTY)
        elif node.is_dir:
            raise fail(errno.EISDIR)
        del parent.entries[name]
        self._touch(parent)
        self.journal.append(Op(kind, parent, name, node))
        self._step()

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove("unlink", parent_inode, name)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove("rmdir", parent_inode, name)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        old_parent, new_parent = self._dir(parent_inode_old), self._dir(parent_inode_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        node = old_parent.entries.get(name_old)
        if node is None:
            raise fail(errno.ENOENT)
        replaced = new_parent.entries.get(name_new)
        if replaced is node:
            return
        if replaced is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise fail(errno.EEXIST)
            if replaced.is_dir != node.is_dir:
                raise fail(errno.EISDIR if replaced.is_dir else errno.ENOTDIR)
            if replaced.is_dir and replaced.entries:
                raise fail(errno.ENOTEMPTY)
        ancestor: Node | None = new_parent
        while node.is_dir and ancestor is not None:  # a directory into itself
            if ancestor is node:
                raise fail(errno.EINVAL)
            ancestor = next((p for p in self.nodes.values() if ancestor in p.entries.values()), None)
        del old_parent.entries[name_old]
        new_parent.entries[name_new] = node
        self._touch(old_parent)
        self._touch(new_parent)
        self.journal.append(Op("rename", old_parent, name_old, node, new_parent, name_new, replaced))
        self._step()

    # ---- directories -----------------------------------------------------------------
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return self._dir(inode).ino

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        directory = self._dir(fh)
        entries = sorted(directory.entries.items())
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attr(node), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._commit_through(self._dir(fh))
        self._step()

    # ---- files --------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise fail(errno.EISDIR)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            self._resize(node, 0)
            self._step()
        return pyfuse3.FileInfo(fh=node.ino)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self._node(fh).data[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._node(fh)
        end = off + len(buf)
        if end > len(node.data):
            node.data.extend(bytes(end - len(node.data)))
        node.data[off:end] = buf
        if buf:
            node.dirty.update(range(off // PAGE, (end - 1) // PAGE + 1))
        self._touch(node)
        self._step()
        return len(buf)

    async def flush(self, fh: int) -> None:
        self._live()

    async def release(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self._node(fh)
        self._commit_through(node)
        self._flush_data(node)
        self._step()

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        self._live()
        real = os.statvfs(self.backing)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(data, name, getattr(real, name))
        data.f_namemax = real.f_namemax
        return data

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise fail(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return []

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        return None  # nodes stay known until the cut (a test's state directory is small)


async def serve(fs: PowerCutFs, control: Path) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            command = (await stream.receive_some(64)).decode().strip()
            if command == "cut":
                fs.cut()
            elif command.startswith("arm "):
                fs.countdown = int(command.split()[1])
            elif command == "sync" and not fs.dead:
                fs.sync()
            if command in ("cut", "ping", "sync") or command.startswith("arm "):
                await stream.send_all(f"ok {fs.counts()}\n".encode())
            elif command == "exit":
                await stream.send_all(b"ok\n")
                nursery.cancel_scope.cancel()
            else:
                await stream.send_all(b"unknown command\n")

    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    control.unlink(missing_ok=True)
    await sock.bind(str(control))
    sock.listen()
    print("mounted", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(sock)])
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.powercut.fs", description=__doc__.splitlines()[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--control", type=Path, required=True, help="Unix socket for cut / ping / exit")
    args = parser.parse_args(argv)
    fs = PowerCutFs(args.backing.resolve())
    options = set(pyfuse3.default_options) | {"fsname=powercut", "subtype=powercut"}
    pyfuse3.init(fs, str(args.mountpoint), options)
    try:
        trio.run(serve, fs, args.control)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
