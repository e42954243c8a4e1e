"""Attacks on the root-side tools by the `station` user (issue 21): `nobody` stands in for `station`,
owns the state directory and plants links where root is about to write or read; the root tool runs
as a real process. Each test failed on the code before the fix."""

from __future__ import annotations

import json
import os
import pwd
import resource
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provisioning_support import fake_systemctl

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against the station user: needs root")
NOBODY = pwd.getpwnam("nobody")
REPO = Path(__file__).resolve().parents[1]


def root_only_file(path: Path, text: str = "root:$6$secret:19000:0:99999:7:::\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def untouched(path: Path, text: str = "root:$6$secret:19000:0:99999:7:::\n") -> bool:
    info = path.lstat()
    return (stat.S_ISREG(info.st_mode) and path.read_text() == text and (info.st_uid, info.st_gid) == (0, 0)
            and stat.S_IMODE(info.st_mode) == 0o600)


def run_root_tool(module: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO, check=False)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A device tree: root's env file, the station user's state directory."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    env = root / "etc/ocpp_station.env"
    env.write_text("OCPP_STATION_NAME='CP-1'\nOCPP_201_URL='wss://old.example/ocpp/'\nOCPP_STATION_PASSWORD='pw-1234567890123456'\n")
    env.chmod(0o640)
    state = root / "var/lib/station"
    state.mkdir(parents=True)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    return root


# ------------------------------------------------------------------------- station-migrate-csms
def test_migrate_csms_does_not_write_or_chown_through_links_the_station_user_planted(device: Path, tmp_path: Path) -> None:
    """Finding 1: a link at the old fixed temp name (and at the history file) pointing at a root-only
    file made `station-migrate-csms` write JSON into it and hand it to the station user."""
    shadow = root_only_file(tmp_path / "shadow")
    state = device / "var/lib/station"
    for planted in (".network-profiles.json.new", "network-profiles.jsonl"):
        (state / planted).symlink_to(shadow)
        os.lchown(state / planted, NOBODY.pw_uid, NOBODY.pw_gid)
    systemctl, _log = fake_systemctl(tmp_path / "bin")
    done = run_root_tool("station.field.migrate", "wss://new.example/ocpp/", "--root", str(device), "--limit", "0.1",
                         "--interval", "0.05", env={"SYSTEMCTL": str(systemctl), "STATION_SMOKE_CMD": "false"})
    assert done.returncode in (1, 3), done.stderr
    assert untouched(shadow)
    profiles = (state / "network-profiles.json").lstat()
    assert stat.S_ISREG(profiles.st_mode) and profiles.st_uid == NOBODY.pw_uid
    assert stat.S_IMODE(profiles.st_mode) == 0o600


# ------------------------------------------------------------------------- sudo station report
LYING_DAEMON = '''
import json, socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1]); server.listen(4)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    for line in conn.makefile("rb"):
        request = json.loads(line)
        answer = {"config": {}, "snapshot": {"daemon": "lying"}, "security": [], "recorder": sys.argv[2]}
        conn.sendall(json.dumps({"id": request["id"], "result": answer}).encode() + b"\\n")
    conn.close()
'''
SECRET_LINE = "2026-11-30T00:00:00.000Z root-only secret line\n"


def report_env(tmp_path: Path, state: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {**base, "STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": "CP-1", "OCPP_201_URL": "ws://127.0.0.1:9/",
            "STATION_STATE_DIR": str(state), "STATION_IPC_SOCKET": str(tmp_path / "absent.sock"),
            "STATION_LOG_FILE": str(state / "station.log")}


def archive_text(path: Path) -> str:
    import tarfile

    with tarfile.open(path, "r:gz") as tar:
        return "".join(tar.extractfile(m).read().decode(errors="replace") for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]


def test_report_into_the_station_users_directory_never_writes_through_planted_links(device: Path, tmp_path: Path) -> None:
    """Finding 5: `sudo station report --out DIR` opened `.<member>.part` and `.<archive>.part` with
    O_CREAT|O_TRUNC, following links the directory's owner planted at those predictable names."""
    state = device / "var/lib/station"
    shadow = root_only_file(tmp_path / "shadow")
    for name in ("station.log", "config.json", "state.json", "flight-recorder.log", "case.tar.gz"):
        (state / f".{name}.part").symlink_to(shadow)
    done = run_root_tool("station", "report", "--out", str(state / "case.tar.gz"), env=report_env(tmp_path, state))
    assert done.returncode == 0, done.stderr
    assert untouched(shadow)
    assert stat.S_ISREG((state / "case.tar.gz").lstat().st_mode)


def test_report_does_not_copy_a_root_only_file_behind_a_linked_log_file(device: Path, tmp_path: Path) -> None:
    """Finding 5: the log file (STATION_LOG_FILE, in the daemon's directory) was read through a link."""
    state = device / "var/lib/station"
    secret = root_only_file(tmp_path / "secret.log", SECRET_LINE)
    (state / "station.log").symlink_to(secret)
    (state / "station.log.1").symlink_to(secret)
    out = tmp_path / "out"
    out.mkdir()
    done = run_root_tool("station", "report", "--since", "all", "--out", str(out / "case.tar.gz"),
                         env=report_env(tmp_path, state))
    assert done.returncode == 0, done.stderr
    assert "root-only secret" not in archive_text(out / "case.tar.gz")


def test_report_reads_the_configured_recorder_not_the_directory_the_daemon_names(device: Path, tmp_path: Path) -> None:
    """Finding 5: the flight-recorder directory was taken from the daemon's IPC answer, so a taken-over
    daemon could have `sudo station report` copy any root-readable directory into the archive."""
    state = device / "var/lib/station"
    rootonly = tmp_path / "rootonly"
    rootonly.mkdir(mode=0o700)
    root_only_file(rootonly / "flight-000001.log", SECRET_LINE)
    sock = tmp_path / "daemon.sock"
    script = tmp_path / "lying_daemon.py"
    script.write_text(LYING_DAEMON)
    liar = subprocess.Popen([sys.executable, str(script), str(sock), str(rootonly)], stdout=subprocess.PIPE, text=True)
    try:
        assert liar.stdout is not None and liar.stdout.readline().strip() == "ready"
        out = tmp_path / "out"
        out.mkdir()
        done = run_root_tool("station", "report", "--since", "all", "--out", str(out / "case.tar.gz"),
                             env={**report_env(tmp_path, state), "STATION_IPC_SOCKET": str(sock)})
    finally:
        liar.kill()
        liar.wait()
    assert done.returncode == 0, done.stderr
    text = archive_text(out / "case.tar.gz")
    assert '"lying"' in text  # the answer was used for what it may say: the daemon's own state
    assert "root-only secret" not in text
    assert "ignoring the recorder directory" in done.stderr


GOOD_LINE = "2026-11-30T00:00:00.000Z a line the daemon wrote\n"


def test_report_reads_huge_planted_log_and_recorder_files_without_holding_them_in_memory(
        device: Path, tmp_path: Path) -> None:
    """Found by hand after the fixes: a 2 GiB file of zeros (sparse, no newline) put as the log file
    and as a recorder segment by the station user was read by `sudo station report` as one line,
    into memory (MemoryError here; on a Pi, the OOM killer picks a process). Run under a 1 GiB
    address-space limit, the report now reads a bounded prefix and still archives the good lines."""
    state = device / "var/lib/station"
    (state / "flight-recorder").mkdir()
    for planted in (state / "station.log", state / "flight-recorder/flight-000001.log"):
        planted.write_text(GOOD_LINE)
        os.truncate(planted, 2 * 1024**3)
        os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
    out = tmp_path / "out"
    out.mkdir()

    def one_gib_of_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))

    done = subprocess.run([sys.executable, "-m", "station", "report", "--since", "all", "--out", str(out / "case.tar.gz")],
                          capture_output=True, text=True, timeout=300, cwd=REPO, preexec_fn=one_gib_of_address_space,
                          env={**os.environ, **report_env(tmp_path, state)}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert archive_text(out / "case.tar.gz").count("a line the daemon wrote") == 2


def station_database(state: Path) -> sqlite3.Connection:
    """The daemon's WAL database with a row only in its WAL (the connection stays open: no checkpoint)."""
    db = sqlite3.connect(state / "station.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
    db.commit()
    db.execute("INSERT INTO outbox DEFAULT VALUES")
    db.commit()
    for path in state.iterdir():
        os.lchown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return db


def state_json(path: Path) -> dict[str, object]:
    import tarfile

    with tarfile.open(path, "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("state.json"))
        return json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]


def test_offline_report_does_not_hang_on_a_fifo_planted_as_the_databases_journal(device: Path, tmp_path: Path) -> None:
    """Root's SQLite opened `station.db-journal` by name (a hot-journal check): a FIFO there hung
    `sudo station report` for good. Now SQLite reads only a private copy made through safefile."""
    state = device / "var/lib/station"
    station_database(state).close()
    os.mkfifo(state / "station.db-journal")
    os.lchown(state / "station.db-journal", NOBODY.pw_uid, NOBODY.pw_gid)
    done = run_root_tool("station", "report", "--out", str(tmp_path / "case.tar.gz"), env=report_env(tmp_path, state),
                         timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not a plain file: not read" in str(state_json(tmp_path / "case.tar.gz")["store"])


ENDLESS = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n)"


@pytest.mark.parametrize("security", [False, True])
def test_offline_report_of_a_database_the_station_user_crafted_to_loop_ends(device: Path, tmp_path: Path,
                                                                            security: bool) -> None:
    """Found by hand after the fixes: the station user's database is read by root. A view named
    `security_log` that never ends, and a table name that closed the quoted identifier with `"` and
    went on with an endless subquery, kept `sudo station report` (and --security) running for good."""
    state = device / "var/lib/station"
    db = sqlite3.connect(state / "station.db")
    db.execute(f"CREATE VIEW security_log AS {ENDLESS} SELECT '2026-12-07T00:00:00' AS wall, 'x' AS type, "
               "'y' AS tech_info, 0 AS critical, x AS id FROM n")
    db.execute(f'CREATE TABLE "a"" WHERE ({ENDLESS} SELECT max(x) FROM n) --" (x)')
    db.commit()
    db.close()
    os.chown(state / "station.db", NOBODY.pw_uid, NOBODY.pw_gid)
    done = run_root_tool("station", "report", *(["--security"] if security else []), "--since", "all",
                         "--out", str(tmp_path / "case.tar.gz"), env=report_env(tmp_path, state), timeout=120)
    assert done.returncode == 0, done.stderr
    if not security:
        assert list(state_json(tmp_path / "case.tar.gz")["store"].values()) == [0]


def test_offline_report_creates_nothing_in_the_daemons_directory(device: Path, tmp_path: Path) -> None:
    """Root's SQLite opened the WAL database in place and made `station.db-wal` and `-shm` there."""
    state = device / "var/lib/station"
    station_database(state).close()
    before = sorted(os.listdir(state))
    done = run_root_tool("station", "report", "--out", str(tmp_path / "case.tar.gz"), env=report_env(tmp_path, state))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(state)) == before == ["station.db"]
    assert state_json(tmp_path / "case.tar.gz")["store"] == {"outbox": 1}


def test_offline_report_reads_what_only_the_wal_holds(device: Path, tmp_path: Path) -> None:
    """The copy takes the WAL along: a row not yet checkpointed is counted."""
    state = device / "var/lib/station"
    db = station_database(state)
    try:
        done = run_root_tool("station", "report", "--out", str(tmp_path / "case.tar.gz"), env=report_env(tmp_path, state))
    finally:
        db.close()
    assert done.returncode == 0, done.stderr
    assert state_json(tmp_path / "case.tar.gz")["store"] == {"outbox": 1}


def test_report_into_a_missing_directory_fails_in_one_line_and_creates_nothing(tmp_path: Path, device: Path) -> None:
    """Issue 24 item 3: `station report --out /nonexistent/dir/x.tar.gz` created the directory (as root under sudo)."""
    target = tmp_path / "nonexistent/dir/x.tar.gz"
    done = run_root_tool("station", "report", "--out", str(target), env=report_env(tmp_path, device / "var/lib/station"))
    assert done.returncode == 2  # exitcodes.USAGE, as documented in docs/troubleshooting.md
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "does not exist" in done.stderr
    assert not (tmp_path / "nonexistent").exists()


# ------------------------------------------------------------------------- station-firstboot
def tree_with_station_user(root: Path) -> None:
    """The tree's passwd names `nobody`'s ids as the `station` user (so the test can switch to it)."""
    (root / "etc/passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nstation:x:{NOBODY.pw_uid}:{NOBODY.pw_gid}::/var/lib/station:/usr/sbin/nologin\n")
    (root / "etc/group").write_text(f"root:x:0:\nstation:x:{NOBODY.pw_gid}:\n")


def test_firstboot_installs_the_env_file_root_owned_readable_by_the_station_group(device: Path) -> None:
    """Configuration root tools read is root's: the station user can read it, never rewrite it."""
    tree_with_station_user(device)
    (device / "etc/ocpp_station.env").unlink()
    (device / "boot/firmware").mkdir(parents=True)
    (device / "boot/firmware/station-identity.env").write_text("OCPP_STATION_NAME='CP-9'\nOCPP_201_URL='wss://c.example/ocpp/'\n")
    done = run_root_tool("station.field.firstboot", "--root", str(device), "--no-smoke")
    assert done.returncode == 0, done.stderr
    info = (device / "etc/ocpp_station.env").stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, NOBODY.pw_gid, 0o640)
    record = (device / "var/lib/station/firstboot.json").stat()
    assert record.st_uid == NOBODY.pw_uid


def test_firstboot_runs_the_smoke_test_as_the_station_user_not_as_root(device: Path) -> None:
    """Finding 8: the release's `station --once` (OCPP, serial, meter code) ran as root at first boot."""
    tree_with_station_user(device)
    smoke = "sh -c 'echo \"{\\\"ok\\\": true, \\\"station_id\\\": \\\"uid=$(id -u)\\\"}\"'"
    done = run_root_tool("station.field.firstboot", "--root", str(device), env={"STATION_SMOKE_CMD": smoke})
    assert done.returncode == 0, done.stderr
    assert f'"station_id": "uid={NOBODY.pw_uid}"' in done.stdout


def test_station_update_runs_the_smoke_test_as_the_station_user_not_as_root(device: Path, tmp_path: Path) -> None:
    """The smoke test after an update is the new release's code (OCPP, serial, meter): it ran as root."""
    from tests.provisioning_support import make_release

    tree_with_station_user(device)
    for version in ("1.0.0", "1.1.0"):
        make_release(device, version)
    (device / "opt/station/current").symlink_to("releases/1.0.0")
    systemctl, _log = fake_systemctl(tmp_path / "bin")
    smoke = "sh -c 'echo \"{\\\"ok\\\": true, \\\"station_id\\\": \\\"uid=$(id -u)\\\"}\"'"
    done = run_root_tool("station.field.update", "1.1.0", "--root", str(device), "--grace", "5", "--interval", "0.05",
                         env={"SYSTEMCTL": str(systemctl), "STATION_SMOKE_CMD": smoke})
    assert done.returncode == 0, done.stderr
    assert f'"station_id": "uid={NOBODY.pw_uid}"' in done.stdout


def test_firstboot_writes_its_record_without_following_a_planted_link(device: Path, tmp_path: Path) -> None:
    shadow = root_only_file(tmp_path / "shadow")
    tree_with_station_user(device)
    (device / "var/lib/station/firstboot.json").symlink_to(shadow)
    done = run_root_tool("station.field.firstboot", "--root", str(device), "--no-smoke")
    assert done.returncode == 0, done.stderr
    assert untouched(shadow)
    assert stat.S_ISREG((device / "var/lib/station/firstboot.json").lstat().st_mode)
