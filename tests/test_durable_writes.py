"""Every file the station writes outside SQLite goes through `station.storage.durable` (issue 23).

A power cut loses what was not fsynced: a temp file renamed without fsync becomes a 0-byte file, a
rename without a directory fsync may be undone. So no module under station/ or api/ may write a
file itself: the check below reads their syntax trees and fails on any open() with a write mode,
Path.write_text / write_bytes, os.replace / os.rename / Path.replace / Path.rename, a symlink
made, a shutil copy or move, and os.open with a writing flag — except in the few places listed in
ALLOWED, each with the reason it is not a state file (or is the durable helper itself).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("station", "api")

ALLOWED_MODULES: dict[str, str] = {
    "station/storage/durable.py": "the durable-write helper itself: the one place that may open, fsync and rename",
    "station/storage/safefile.py": "the root side's dirfd-based safe-file module, built on the durable primitives",
    "station/devtools/demo.py": "development tool: the demo's child logs and API token in a throw-away work dir",
    "station/devtools/csms.py": "development CSMS: its frame log and test fixtures, never on a station",
    "station/controller/simulator.py": "ESP32 simulator (development): re-points its pty symlink, no station state",
    "station/meter/simulator.py": "meter simulator (development): re-points its pty symlink, no station state",
    "station/meter/sim_process.py": "meter simulator launcher (development): the child's output log",
}
"""Whole modules that are not the daemon's state writers."""

ALLOWED_FUNCTIONS: dict[tuple[str, str], str] = {
    ("station/logs.py", "RotatingFile.__init__"): "a log file, not state: losing the last unsynced line is accepted",
    ("station/logs.py", "RotatingFile._rotate"): "log rotation: a lost rename leaves the lines in the current file",
    ("station/diagnostics/recorder.py", "FlightRecorder._open"): "flight recorder ring: a log, never fsynced by design",
    ("station/diagnostics/report.py", "_database_copy"): "root's private scratch copy of the database, read once and deleted",
    ("station/diagnostics/archive.py", "build"): "diagnostics archive: an output handed out at once, rebuilt on demand",
    ("station/handover.py", "console"): "points stdout at /dev/null after a broken pipe: no file is written",
    ("station/handover.py", "validate_to"): "writes into a pipe to the waiting daemon, not a file",
    ("station/daemon.py", "lock_state_dir"): "the daemon's lock file (flock): it holds no data",
    ("station/field/update.py", "_locked"): "the update lock file (flock): it holds no data",
    ("station/core/store.py", "_owner_only"): "creates the empty SQLite file 0600; SQLite writes and syncs it",
}
"""(module, function) pairs allowed to write without the helper, each with why it is not a state file."""

_MODE = re.compile(r"[rwaxbtU+]{1,4}(:[a-z0-9]*)?")
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}


@dataclass(frozen=True)
class Write:
    module: str
    function: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} in {self.function or '<module>'}: {self.what}"


def _is_write_mode(node: ast.expr | None) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODE.fullmatch(node.value)):
        return False
    return any(c in node.value.split(":")[0] for c in "wax+")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _mode_argument(call: ast.Call, position: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def _what(call: ast.Call) -> str | None:
    """Why `call` writes a file by hand, or None."""
    func = call.func
    name = _dotted(func)
    attr = func.attr if isinstance(func, ast.Attribute) else name
    if name in ("open", "io.open", "os.fdopen", "codecs.open"):
        return f"{name}() with a write mode" if _is_write_mode(_mode_argument(call, 1)) else None
    if name in ("tarfile.open", "gzip.open", "bz2.open", "lzma.open", "zipfile.ZipFile"):
        return f"{name}() with a write mode" if _is_write_mode(_mode_argument(call, 1)) else None
    if isinstance(func, ast.Attribute) and attr == "open" and name not in ("os.open",):
        return f"{name}() with a write mode" if _is_write_mode(_mode_argument(call, 0)) else None
    if attr in ("write_text", "write_bytes"):
        return f"{name}()"
    if name in ("os.replace", "os.rename", "os.renames", "os.symlink", "os.link") or name.startswith("shutil."):
        if name.startswith("shutil.") and attr not in ("copy", "copy2", "copyfile", "copytree", "move", "copyfileobj"):
            return None
        return f"{name}()"
    if attr in ("symlink_to", "hardlink_to"):
        return f"{name}()"
    if (attr in ("replace", "rename") and isinstance(func, ast.Attribute) and len(call.args) == 1 and not call.keywords
            and name != "dataclasses.replace"):
        return f"{name}() (Path.{attr}: a rename)"  # str.replace takes two arguments
    if name == "os.open" and len(call.args) > 1:
        flags = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for n in ast.walk(call.args[1])}
        if flags & _WRITE_FLAGS:
            return f"os.open() with {' | '.join(sorted(flags & _WRITE_FLAGS))}"
    return None


def parse(source: str) -> ast.Module:
    """`ast.parse`, again when CPython 3.11's race hits: its AST recursion counter is per interpreter,
    not per thread (gh-106905), and a thread an earlier test left formatting a traceback (3.11's
    traceback parses the failing line for its carets) makes a parse here fail with "AST constructor
    recursion depth mismatch"."""
    for attempt in range(5):
        try:
            return ast.parse(source)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def writes_in(source: str, module: str) -> list[Write]:
    """Every hand-made file write in a module's source text."""
    found: list[Write] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call) and (what := _what(child)) is not None:
                found.append(Write(module, ".".join(scope), child.lineno, what))
            visit(child, scope)

    visit(parse(source), [])
    return found


def unlisted(writes: list[Write]) -> list[Write]:
    """The writes neither allowed nor pending."""
    def allowed(w: Write) -> bool:
        if w.module in ALLOWED_MODULES:
            return True
        return any(w.module == module and (w.function == function or w.function.startswith(function + "."))
                   for module, function in ALLOWED_FUNCTIONS)
    return [w for w in writes if not allowed(w)]


def station_writes() -> list[Write]:
    found: list[Write] = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            found += writes_in(path.read_text(encoding="utf-8"), module)
    return found


# ------------------------------------------------------------------------------------------ tests
def test_no_module_writes_a_file_except_through_the_durable_helper() -> None:
    offenders = unlisted(station_writes())
    assert not offenders, "write these through station.storage.durable:\n" + "\n".join(map(str, offenders))


def test_every_allowed_function_still_writes_so_the_list_stays_small() -> None:
    writes = station_writes()
    stale = [key for key in ALLOWED_FUNCTIONS if not any(
        w.module == key[0] and (w.function == key[1] or w.function.startswith(key[1] + ".")) for w in writes)]
    assert not stale, f"remove from ALLOWED_FUNCTIONS (no longer writes by hand): {stale}"


BROKEN = '''
import json, os
from station.storage.durable import durable_write_text

class Firmware:
    def _save_job(self, data):
        tmp = self.directory / ".job.json.new"
        with open(tmp, "w") as handle:          # the bug of issue 23: no fsync, no directory fsync
            json.dump(data, handle)
        os.replace(tmp, self.directory / "job.json")

    def _mark(self, data):
        durable_write_text(self.marker, json.dumps(data))
'''


def test_a_plain_write_replacing_the_helper_is_caught() -> None:
    offenders = unlisted(writes_in(BROKEN, "station/trust/firmware.py"))
    assert [(w.function, w.what) for w in offenders] == [
        ("Firmware._save_job", "open() with a write mode"), ("Firmware._save_job", "os.replace()")]


@pytest.mark.parametrize("line", [
    'Path("state.json").write_text("{}")',
    'path.write_bytes(b"")',
    'tmp.replace(path)',
    'path.rename(other)',
    'os.rename(a, b)',
    'path.open("a")',
    'open(path, mode="wb")',
    'os.fdopen(fd, "w")',
    'os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)',
    'os.symlink(target, link)',
    'shutil.copyfile(a, b)',
    'tarfile.open(fileobj=raw, mode="w:gz")',
])
def test_each_way_of_writing_a_file_is_caught(line: str) -> None:
    assert len(writes_in(f"def save():\n    {line}\n", "station/broken.py")) == 1


@pytest.mark.parametrize("line", [
    'open(path).read()',
    'open(path, "rb")',
    'path.open()',
    'text.replace("a", "b")',
    'os.open(path, os.O_RDONLY | os.O_DIRECTORY)',
    'durable_write_text(path, "{}")',
])
def test_reading_and_string_work_are_not_writes(line: str) -> None:
    assert writes_in(f"def load():\n    {line}\n", "station/fine.py") == []


def test_the_real_firmware_module_with_its_job_save_turned_into_a_plain_write_is_caught() -> None:
    source = (ROOT / "station/trust/firmware.py").read_text(encoding="utf-8")
    helper_call = "durable_write_text(self._job_file, json.dumps(data), mode=0o600)"
    assert helper_call in source
    broken = source.replace(helper_call, "self._job_file.write_text(json.dumps(data))")
    assert unlisted(writes_in(source, "station/trust/firmware.py")) == []
    assert [(w.function, w.what) for w in unlisted(writes_in(broken, "station/trust/firmware.py"))] == [
        ("FirmwareUpdater._save_job", "self._job_file.write_text()")]
