"""Root-side field tools, run by systemd units or technicians, never by the daemon: release update
with rollback (`station-update`), first boot (`station-firstboot`), fleet manifest
(`station-fleet`), CSMS migration (`station-migrate-csms`) and the host operations they share."""
