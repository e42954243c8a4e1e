"""Power-cut test rig: a FUSE file system that keeps what was not synced in memory and drops it on a cut."""
