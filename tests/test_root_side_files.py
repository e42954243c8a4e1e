"""Code that runs as root opens no file by path: it goes through `station.storage.safefile`.

Root-side tools work in directories the `station` user controls, where a path is whatever that user
makes it (a link to /etc/shadow, a FIFO, a hard link). The rule (docs/security.md): every file
operation is relative to a directory descriptor reached without following links, which
`station.storage.safefile` provides. This test reads the root-run modules' syntax trees and fails
on any call that opens, creates, changes or removes a file by path. The short allowlist below
names each exception and why it is safe.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT_RUN = sorted(
    [*(REPO / "station/field").glob("*.py"),
     REPO / "station/network_profiles.py",  # written by root through station-migrate-csms
     REPO / "station/diagnostics/archive.py",  # `sudo station report`
     REPO / "station/diagnostics/report.py"]
)

BUILTINS = {"open"}
"""Builtins that open a path."""
MODULE_CALLS = {
    "os": {"open", "chmod", "chown", "lchown", "rename", "replace", "unlink", "remove", "rmdir", "mkdir",
           "makedirs", "link", "symlink", "mkfifo", "mknod", "truncate", "removedirs", "renames"},
    "shutil": {"copy", "copy2", "copyfile", "copyfileobj", "copytree", "copymode", "copystat", "move", "rmtree", "chown"},
    "tempfile": {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "TemporaryFile", "SpooledTemporaryFile"},
    "envfile": {"read", "write_atomic"},  # by path; root-side code parses bytes read through safefile
    "sqlite3": {"connect"},
    "tarfile": {"open"},
}
"""module.function calls that take a path (``os.*`` with ``dir_fd=`` is the safe form and allowed)."""
PATH_METHODS_ALWAYS = {"write_text", "write_bytes", "touch", "chmod", "lchmod", "chown", "symlink_to",
                       "hardlink_to", "link_to", "open"}
"""`pathlib.Path` methods that act on the file; no `SafeDir` method has these names."""
PATH_METHODS_WITHOUT_ARGS = {"read_text", "read_bytes", "unlink", "mkdir", "rmdir"}
"""`Path.x()` takes no positional argument; `SafeDir.x(name, ...)` takes a name: only the former is flagged."""
PATH_METHODS_ONE_ARG = {"replace", "rename"}
"""`Path.replace(target)`; `str.replace(old, new)` and `SafeDir.replace(name, data)` take two."""

# (module, function, call): why it is safe. Keep it short; every entry is a file root opens by path.
ALLOWED: dict[tuple[str, str, str], str] = {
    # `station report` reads a private copy of the state database (copied through safefile's
    # descriptors into root's own mkdtemp directory): SQLite never opens a file of the daemon's.
    ("station/diagnostics/report.py", "_database_copy", "tempfile.TemporaryDirectory"): "root's 0700 mkdtemp",
    ("station/diagnostics/report.py", "_database_copy", "sqlite3.connect"): "the copy in root's mkdtemp",
    # tarfile writes into the descriptor safefile's writer gives it (fileobj=), never a path.
    ("station/diagnostics/archive.py", "build", "tarfile.open"): "fileobj from SafeDir.writer",
}


def _call_name(node: ast.Call) -> str | None:
    """The flagged name of a call that acts on a path, or None."""
    func = node.func
    keywords = {k.arg for k in node.keywords}
    positional = len(node.args)
    if isinstance(func, ast.Name):
        return func.id if func.id in BUILTINS else None
    if not isinstance(func, ast.Attribute):
        return None
    attr = func.attr
    if isinstance(func.value, ast.Name) and func.value.id in MODULE_CALLS:
        module = func.value.id
        if attr not in MODULE_CALLS[module]:
            return None
        if module == "os" and ({"dir_fd", "src_dir_fd", "dst_dir_fd"} & keywords):
            return None  # relative to a directory descriptor: the safe form
        return f"{module}.{attr}"
    if attr in PATH_METHODS_ALWAYS:
        return attr
    if attr in PATH_METHODS_WITHOUT_ARGS and positional == 0:
        return attr
    if attr in PATH_METHODS_ONE_ARG and positional == 1:
        return attr
    return None


def violations(path: Path, allowed: dict[tuple[str, str, str], str]) -> list[str]:
    relative = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name if function == "<module>" else function)
                continue
            if isinstance(child, ast.Call):
                name = _call_name(child)
                if name and (relative, function, name) not in allowed:
                    found.append(f"{relative}:{child.lineno} {function}: {name}(...) on a path")
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_root_run_code_opens_no_file_by_path() -> None:
    problems = [v for path in ROOT_RUN for v in violations(path, ALLOWED)]
    assert not problems, "use station.storage.safefile (docs/security.md):\n" + "\n".join(problems)


def test_every_allowlist_entry_is_still_needed() -> None:
    """A stale entry would quietly allow the next call of that name in that function."""
    found = {v for path in ROOT_RUN for v in violations(path, {})}
    stale = [key for key in ALLOWED if not any(v.startswith(f"{key[0]}:") and f" {key[1]}: {key[2]}(" in v for v in found)]
    assert not stale, stale


def test_the_check_catches_a_write_by_path(tmp_path: Path) -> None:
    """Guards the test itself: each way root code used to write by path is caught."""
    module = tmp_path / "scratch_root_tool.py"
    module.write_text(
        "import os, shutil\nfrom pathlib import Path\n"
        "def save(path, data):\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
        "    os.chown(path, 1, 1)\n"
        "    Path(path).write_text(data)\n"
        "    with open(path, 'a') as f: f.write(data)\n"
        "    with Path(path).open('a') as f: f.write(data)\n"
        "    shutil.copy(path, path + '.bak')\n"
        "    Path(path + '.new').replace(path)\n"
        "    Path(path).unlink()\n"
        "def fine(directory, fd):\n"
        "    directory.replace('name', b'data')\n"
        "    directory.unlink('name')\n"
        "    os.open('name', os.O_RDONLY, dir_fd=fd)\n"
        "    'text'.replace('a', 'b')\n"
    )
    found = violations(module, {})
    assert [line.split(": ", 1)[1] for line in found] == [
        "os.open(...) on a path", "os.chown(...) on a path", "write_text(...) on a path", "open(...) on a path",
        "open(...) on a path", "shutil.copy(...) on a path", "replace(...) on a path", "unlink(...) on a path",
    ]
