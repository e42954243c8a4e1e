#!/usr/bin/env bash
# Prepare the master SSD for the golden image: install the station software, then strip
# everything that makes this device *this* device, so 150 clones each become themselves at
# first boot (station-firstboot reads station-identity.env from the boot partition).
#
#   sudo provisioning/golden-image.sh [install.sh options...]      # on the master Pi
#   provisioning/golden-image.sh --root DIR --no-apt ...            # on a tree (tests)
#
# After it finishes: power off (it does not), image the SSD (docs/provisioning.md).
# Removed: /etc/ocpp_station.env, /etc/machine-id (emptied, so systemd makes a new one),
# SSH host keys, journal and logs, station state (/var/lib/station), update history,
# shell histories, any leftover station-identity.env on the boot partition.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="$(cd "${2:?}" 2>/dev/null && pwd || echo "$2")"; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --dev-allow-unsigned-firmware)  # a fleet image never installs unsigned firmware
      echo "golden-image.sh: --dev-allow-unsigned-firmware is for development rigs, never a fleet image" >&2; exit 2 ;;
    *) shift ;;
  esac
done
STAGE="install"
trap 'echo "golden-image.sh: stage '"'"'$STAGE'"'"' failed at line $LINENO: $BASH_COMMAND" >&2' ERR

echo "==> [install] provisioning/install.sh ${args[*]}"
"$HERE/install.sh" "${args[@]}"

STAGE="identity"
echo "==> [identity] removing per-device identity"
rm -fv "$ROOT/etc/ocpp_station.env" "$ROOT"/boot/firmware/station-identity.env "$ROOT"/boot/station-identity.env
# An empty (not missing) machine-id makes systemd generate a fresh one at first boot.
mkdir -p "$ROOT/etc"
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
[ -d "$ROOT/var/lib/dbus" ] && ln -sf /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
rm -fv "$ROOT"/etc/ssh/ssh_host_*
echo "    machine-id emptied, SSH host keys removed (station-firstboot or the OS regenerates them)"

STAGE="state"
echo "==> [state] removing station state, update history, logs and shell histories"
rm -rf "$ROOT/var/lib/station" "$ROOT/var/lib/station-update"
if [ -z "$ROOT" ] && command -v journalctl >/dev/null; then
  journalctl --rotate >/dev/null 2>&1 || true
  journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fi
rm -rf "$ROOT"/var/log/journal/*
find "$ROOT/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete 2>/dev/null || true
find "$ROOT/var/log" -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -f "$ROOT"/root/.bash_history "$ROOT"/home/*/.bash_history
rm -rf "$ROOT"/tmp/* "$ROOT"/var/tmp/*

STAGE="check"
echo "==> [check] nothing device-specific left"
leftovers=()
for path in /etc/ocpp_station.env /var/lib/station /boot/firmware/station-identity.env; do
  [ -e "$ROOT$path" ] && leftovers+=("$path")
done
compgen -G "$ROOT/etc/ssh/ssh_host_*" >/dev/null && leftovers+=(/etc/ssh/ssh_host_*)
[ -s "$ROOT/etc/machine-id" ] && leftovers+=(/etc/machine-id)
[ -e "$ROOT/etc/station/firmware-allow-unsigned" ] && leftovers+=(/etc/station/firmware-allow-unsigned)
if [ ${#leftovers[@]} -gt 0 ]; then
  echo "golden-image.sh: stage 'check' failed: still present: ${leftovers[*]}" >&2
  exit 1
fi
[ -L "$ROOT/opt/station/current" ] || { echo "golden-image.sh: stage 'check' failed: no current release" >&2; exit 1; }
echo "==> done: master is clean. Power off now and image the SSD (do not boot it again first)."
