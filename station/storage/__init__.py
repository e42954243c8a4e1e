"""How the station puts bytes on disk so that a power cut cannot half-write them.

Written for root as much as for the daemon: standard library only, no daemon imports, so the
root-side tools (`station.field`) may import it.

- `durable`: the one durable-write helper (temp file, fsync, rename, fsync the directory) and the
  durable append for history files, plus whole directories, symlink swaps and removals that
  survive a cut. Every state file outside SQLite goes through it (tests/test_durable_writes.py).
"""
