"""`python -m tests.powercut.sqlite_sync_off run`: the daemon with its SQLite store never syncing, on purpose.

Every `PRAGMA synchronous=...` the store issues becomes `synchronous=OFF`. The power-cut soak runs it
to show that it sees the loss when there is some (committed events gone after a cut).
"""

from __future__ import annotations

import sqlite3
from typing import Any


class UnsyncedConnection(sqlite3.Connection):
    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if sql.replace(" ", "").upper().startswith("PRAGMASYNCHRONOUS="):
            sql = "PRAGMA synchronous=OFF"
        return super().execute(sql, *args)


_connect = sqlite3.connect


def unsynced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs.setdefault("factory", UnsyncedConnection)
    return _connect(*args, **kwargs)


sqlite3.connect = unsynced_connect  # type: ignore[assignment]

if __name__ == "__main__":
    from station.handover import console

    raise SystemExit(console())
