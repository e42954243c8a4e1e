from station.handover import console

raise SystemExit(console())
