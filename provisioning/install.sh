#!/usr/bin/env bash
# Install (or re-install) the charge point software on a Raspberry Pi OS / Debian device.
#
# Idempotent and staged: every stage says what it does and reports "changed" or "unchanged";
# running it twice changes nothing the second time. A failure names its stage.
#
#   sudo provisioning/install.sh                       # install this source tree
#   sudo provisioning/install.sh --artefact dist/ocpp_station-1.4.0-py3-none-any.whl
#   provisioning/install.sh --root /tmp/tree --no-apt  # into a directory tree (tests, images)
#
# A --root tree is meant to be copied to / (an image): every path in it, the venv's scripts
# included, names its place on the device (/opt/station/...), not DIR. The venv's interpreter is
# --python as given: it must exist at the same path on the device (build with the image's
# Python, e.g. --python /usr/bin/python3 on the same OS release). The golden image itself is
# made on the master device, without --root (docs/provisioning.md).
#
# Options:
#   --root DIR          install below DIR instead of / (no service restarts, no root check)
#   --artefact PATH     wheel, sdist or source directory to install (default: this source tree)
#   --version V         release name (default: from the wheel/sdist name or station/__init__.py)
#   --wheelhouse DIR    install offline from DIR (pip --no-index --find-links DIR)
#   --pip "CMD"         create the venv without pip and install with CMD --python VENV (e.g. an
#                       existing "python3 -m pip"); default: the venv's own pip
#   --python PATH       interpreter for the release venv (default: python3)
#   --no-apt            skip the apt packages stage
#   --no-enable         install units but do not enable/start them
#   --esp32-usb VID:PID USB ids of the ESP32 serial adapter for /dev/esp32 (repeatable)
#   --firmware-root PEM manufacturer root certificate the root-side update flow requires signed
#                       releases to chain to; installed root-owned into /etc/station/firmware-roots/
#                       (repeatable; the daemon's user cannot change these). Without one, firmware
#                       updates the CSMS orders are refused by the root side.
#   --dev-allow-unsigned-firmware
#                       DEVELOPMENT ONLY: the root side installs daemon-requested firmware without a
#                       manufacturer signature (checksum only). Off by default; a later run without
#                       the flag turns it off again.
#   -h, --help          this text
# Environment: SYSTEMCTL (default systemctl), APT_GET (default apt-get).
set -Eeuo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
ARTEFACT=""
VERSION=""
WHEELHOUSE=""
PIP_CMD=""
PYTHON="python3"
DO_APT=1
DO_ENABLE=1
ESP32_USB=()
FIRMWARE_ROOTS=()
DEV_UNSIGNED=0
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
APT_GET="${APT_GET:-apt-get}"
APT_PACKAGES=(python3 python3-venv python3-pip ca-certificates)
UNITS=(station.service station-api.service station-firstboot.service station-update.path station-update.service)
ENABLE_UNITS=(station.service station-api.service station-firstboot.service station-update.path)
COMMANDS=(station station-update station-fleet station-migrate-csms station-firstboot)
MIN_FREE_MB=300

STAGE="arguments"
CHANGED=0

usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "install.sh: stage '$STAGE' failed: $*" >&2; exit 1; }
trap 'rc=$?; echo "install.sh: stage '"'"'$STAGE'"'"' failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --artefact|--wheel) ARTEFACT="${2:?--artefact needs a path}"; shift 2 ;;
    --version) VERSION="${2:?--version needs a value}"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --pip) PIP_CMD="${2:?--pip needs a command}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
    --no-apt) DO_APT=0; shift ;;
    --no-enable) DO_ENABLE=0; shift ;;
    --esp32-usb) ESP32_USB+=("${2:?--esp32-usb needs VID:PID}"); shift 2 ;;
    --firmware-root) FIRMWARE_ROOTS+=("${2:?--firmware-root needs a PEM file}"); shift 2 ;;
    --dev-allow-unsigned-firmware) DEV_UNSIGNED=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ ${#ESP32_USB[@]} -gt 0 ] || ESP32_USB=(303a:1001 10c4:ea60)
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
fi
ARTEFACT="${ARTEFACT:-$SRC}"
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1

stage() { STAGE="$1"; echo "==> [$1] $2"; }
note() { echo "    $*"; }
changed() { CHANGED=1; note "changed: $*"; }
unchanged() { note "unchanged: $*"; }

# install_file SRC DEST MODE: copy only when the content or mode differs.
install_file() {
  local src="$1" dest="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    unchanged "$dest"; return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  changed "$dest"
}

# ensure_symlink TARGET LINK: point LINK at TARGET unless it already does.
ensure_symlink() {
  local target="$1" link="$2"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then unchanged "$link -> $target"; return 0; fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$target" "$link.new" && mv -Tf "$link.new" "$link"
  changed "$link -> $target"
}

id_of() { # id_of passwd|group NAME → numeric id from the target tree
  awk -F: -v n="$2" '$1 == n { print $3; exit }' "$ROOT/etc/$1"
}

# ---------------------------------------------------------------------------------------------
stage preflight "checking privileges, OS, Python, serial device and disk"
if [ -z "$ROOT" ] && [ "$IS_ROOT" != 1 ]; then die "run as root (sudo), or use --root DIR"; fi
if [ -r /etc/os-release ]; then
  os_ids="$(. /etc/os-release && echo " ${ID:-} ${ID_LIKE:-} ")"
  os_name="$(. /etc/os-release && echo "${PRETTY_NAME:-${ID:-unknown}}")"
  case "$os_ids" in
    *" debian "*|*" raspbian "*) note "OS: $os_name" ;;
    *) if [ -z "$ROOT" ]; then die "unsupported OS $os_name: Raspberry Pi OS or Debian needed"; fi
       note "warning: host OS $os_name is not Debian (fine for a --root tree)" ;;
  esac
else
  [ -n "$ROOT" ] || die "cannot identify the OS (/etc/os-release missing)"
fi
if [ "$DO_APT" = 1 ] && [ -z "$ROOT" ]; then
  note "Python is checked after the apt stage"
else
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.11 (found: $("$PYTHON" -V 2>&1 || echo none))"
  note "Python: $("$PYTHON" -V 2>&1)"
fi
if ls /dev/esp32 /dev/ttyUSB* /dev/ttyACM* >/dev/null 2>&1; then
  note "serial: $(ls /dev/esp32 /dev/ttyUSB* /dev/ttyACM* 2>/dev/null | tr '\n' ' ')"
else
  note "warning: no ESP32 serial device found yet (/dev/esp32, /dev/ttyUSB*, /dev/ttyACM*)"
fi
free_mb=$(df -Pm "${ROOT:-/}" | awk 'NR == 2 { print $4 }')
[ "${free_mb:-0}" -ge "$MIN_FREE_MB" ] || die "only ${free_mb} MB free on ${ROOT:-/}, need ${MIN_FREE_MB} MB"
note "disk: ${free_mb} MB free"
[ -e "$ARTEFACT" ] || die "artefact $ARTEFACT does not exist"

# ---------------------------------------------------------------------------------------------
stage apt "installing Debian packages: ${APT_PACKAGES[*]}"
if [ "$DO_APT" = 0 ]; then
  note "skipped (--no-apt)"
elif [ -n "$ROOT" ]; then
  note "skipped (--root: install packages into the image's own OS instead)"
else
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    unchanged "all packages present"
  else
    DEBIAN_FRONTEND=noninteractive "$APT_GET" update -qq
    DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y -qq --no-install-recommends "${missing[@]}"
    changed "installed ${missing[*]}"
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11 ($("$PYTHON" -V 2>&1))"
fi

# ---------------------------------------------------------------------------------------------
stage users "system users: station (groups dialout) and station-api (group station)"
if [ "$IS_ROOT" != 1 ] || [ ! -f "$ROOT/etc/passwd" ]; then
  note "skipped (needs root and $ROOT/etc/passwd)"
else
  prefix=(); [ -n "$ROOT" ] && prefix=(--prefix "$ROOT")
  grep -q '^dialout:' "$ROOT/etc/group" || { groupadd "${prefix[@]}" --system dialout; changed "group dialout"; }
  for name in station station-api; do
    if grep -q "^$name:" "$ROOT/etc/group"; then unchanged "group $name"; else
      groupadd "${prefix[@]}" --system "$name"; changed "group $name"; fi
  done
  if grep -q '^station:' "$ROOT/etc/passwd"; then unchanged "user station"; else
    useradd "${prefix[@]}" --system --gid station --groups dialout --home-dir /var/lib/station \
      --no-create-home --shell /usr/sbin/nologin --comment "charge point daemon" station
    changed "user station"
  fi
  if grep -q '^station-api:' "$ROOT/etc/passwd"; then unchanged "user station-api"; else
    useradd "${prefix[@]}" --system --gid station-api --groups station --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin --comment "charge point local API" station-api
    changed "user station-api"
  fi
fi

# ---------------------------------------------------------------------------------------------
if [ -z "$VERSION" ]; then
  case "$(basename "$ARTEFACT")" in
    *.whl) VERSION="$(basename "$ARTEFACT" | cut -d- -f2)" ;;
    *.tar.gz) VERSION="$(basename "$ARTEFACT" .tar.gz)"; VERSION="${VERSION##*-}" ;;
    *) [ -f "$ARTEFACT/station/__init__.py" ] || die "cannot tell the version of $ARTEFACT; pass --version"
       VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ARTEFACT/station/__init__.py")" ;;
  esac
fi
case "$VERSION" in ""|*/*|.*) STAGE=release; die "bad release version '$VERSION'" ;; esac
BASE="$ROOT/opt/station"
REL="$BASE/releases/$VERSION"
stage release "release $VERSION into /opt/station/releases/$VERSION with its own venv"
if [ -f "$REL/.complete" ]; then
  unchanged "release $VERSION already installed"
else
  rm -rf "$REL"  # an interrupted earlier attempt
  mkdir -p "$REL"
  pip_args=(--quiet --disable-pip-version-check)
  [ -n "$WHEELHOUSE" ] && pip_args+=(--no-index --find-links "$WHEELHOUSE")
  if [ -n "$PIP_CMD" ]; then
    "$PYTHON" -m venv --without-pip "$REL/venv"
    # shellcheck disable=SC2086 # PIP_CMD is a command line
    $PIP_CMD --python "$REL/venv/bin/python" install "${pip_args[@]}" "$ARTEFACT"
  else
    "$PYTHON" -m venv "$REL/venv"
    "$REL/venv/bin/python" -m pip install "${pip_args[@]}" "$ARTEFACT"
  fi
  [ -x "$REL/venv/bin/station" ] || die "the artefact did not provide the 'station' command"
  if [ -n "$ROOT" ]; then
    # The scripts' shebangs (and pyvenv.cfg, activate) name the venv where it was built, in the
    # tree; copied to the device they must name /opt/station/... or nothing runs.
    "$REL/venv/bin/python" - "$REL/venv" "$ROOT/opt/station/" /opt/station/ <<'PY' || die "cannot point the venv at /opt/station"
import os, sys
venv, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
paths = [os.path.join(venv, "pyvenv.cfg")] + [os.path.join(venv, "bin", n) for n in os.listdir(os.path.join(venv, "bin"))]
for path in paths:
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as f:
        data = f.read()
    if old in data and b"\0" not in data:
        with open(path + ".new", "wb") as f:
            f.write(data.replace(old, new))
        os.chmod(path + ".new", os.stat(path).st_mode & 0o7777)
        os.replace(path + ".new", path)
PY
    interpreter="$(readlink -f "$REL/venv/bin/python")"
    [ -e "$ROOT$interpreter" ] \
      || note "warning: the venv's interpreter $interpreter is not in the tree: the device needs it at that path"
  fi
  # Bytecode for the station's own packages (pip writes it, other installers may not): the units
  # set PYTHONDONTWRITEBYTECODE, so without it every start compiles the sources again (~0.5 s of
  # a Pi's start-up, docs/performance.md). Up-to-date files are skipped.
  "$REL/venv/bin/python" -c 'import compileall, importlib.util, os, sys
sys.exit(0 if all(compileall.compile_dir(os.path.dirname(importlib.util.find_spec(p).origin), quiet=1)
                  for p in ("station", "api")) else 1)' || die "cannot compile the release's bytecode"
  printf '%s\n' "$VERSION" > "$REL/VERSION"
  touch "$REL/.complete"
  changed "release $VERSION"
fi
RELEASE_CHANGED=0
if [ -L "$BASE/current" ] && [ "$(readlink "$BASE/current")" = "releases/$VERSION" ]; then
  unchanged "current -> releases/$VERSION"
else
  if [ -L "$BASE/current" ]; then ensure_symlink "$(readlink "$BASE/current")" "$BASE/previous"; fi
  ensure_symlink "releases/$VERSION" "$BASE/current"
  RELEASE_CHANGED=1
fi

# ---------------------------------------------------------------------------------------------
ENV_FILE="$ROOT/etc/ocpp_station.env"
stage config "/etc/ocpp_station.env (root:station 0640: the daemon reads it, only root changes it; created from the template if missing, never overwritten)"
[ ! -L "$ENV_FILE" ] || die "$ENV_FILE is a symlink; replace it with the file itself"
if [ -e "$ENV_FILE" ]; then
  unchanged "$ENV_FILE exists; left as it is"
else
  install -D -m 0640 "$SRC/provisioning/ocpp_station.env.template" "$ENV_FILE"
  changed "$ENV_FILE from template (fill it in, or let station-firstboot write it)"
fi
# Kept for station-firstboot, which rebuilds the env file from it on cloned devices.
install_file "$SRC/provisioning/ocpp_station.env.template" "$BASE/ocpp_station.env.template" 0644 || true
# Root tools (station-migrate-csms, station-firstboot, sudo station report) act on what this file
# says (STATION_STATE_DIR, URLs): the daemon's user may read it, never change it. A file from an
# older install (owner station, 0600) is handed back to root here.
if [ "$IS_ROOT" = 1 ] && [ -f "$ROOT/etc/group" ] && [ -n "$(id_of group station)" ]; then
  want="0:$(id_of group station)"
  if [ "$(stat -c %u:%g "$ENV_FILE")" != "$want" ]; then chown "$want" "$ENV_FILE"; changed "owner root:station"; fi
fi
if [ "$(stat -c %a "$ENV_FILE")" != 640 ]; then chmod 0640 "$ENV_FILE"; changed "mode 0640"; fi

# ---------------------------------------------------------------------------------------------
stage firmware-roots "manufacturer roots for signed updates: /etc/station/firmware-roots/ (root's alone)"
# station-update trusts only these (never roots the CSMS installs over OCPP), and only in directories
# owned by root that nobody else may write.
for dir in "$ROOT/etc/station" "$ROOT/etc/station/firmware-roots"; do
  if [ ! -d "$dir" ]; then install -d -m 0755 "$dir"; changed "$dir"; fi
  if [ "$IS_ROOT" = 1 ] && [ "$(stat -c %u:%g "$dir")" != 0:0 ]; then chown 0:0 "$dir"; changed "$dir owner root"; fi
  if [ "$(stat -c %a "$dir")" != 755 ]; then chmod 0755 "$dir"; changed "$dir mode 0755"; fi
done
for pem in "${FIRMWARE_ROOTS[@]}"; do
  grep -q -- "-----BEGIN CERTIFICATE-----" "$pem" || die "$pem is not a PEM certificate"
  name="$(basename "$pem")"
  dest="$ROOT/etc/station/firmware-roots/${name%.pem}.pem"
  install_file "$pem" "$dest" 0644 || true
  if [ "$IS_ROOT" = 1 ] && [ "$(stat -c %u:%g "$dest")" != 0:0 ]; then chown 0:0 "$dest"; changed "$dest owner root"; fi
done
DEV_MARKER="$ROOT/etc/station/firmware-allow-unsigned"
if [ "$DEV_UNSIGNED" = 1 ]; then
  for line in "" "!!! DEVELOPMENT INSTALL: UNSIGNED FIRMWARE ALLOWED (--dev-allow-unsigned-firmware) !!!" \
      "!!! station-update will install firmware the daemon asks for without a manufacturer signature. !!!" \
      "!!! Never ship this tree to a station: re-run install.sh without the flag to turn it off.      !!!" ""; do
    echo "$line"; echo "$line" >&2
  done
  if [ -f "$DEV_MARKER" ]; then unchanged "$DEV_MARKER"; else
    printf '%s\n' "Written by install.sh --dev-allow-unsigned-firmware: station-update accepts unsigned firmware." > "$DEV_MARKER"
    chmod 0644 "$DEV_MARKER"
    changed "$DEV_MARKER (DEVELOPMENT: unsigned firmware allowed)"
  fi
elif [ -e "$DEV_MARKER" ]; then
  rm -f "$DEV_MARKER"; changed "removed $DEV_MARKER (unsigned firmware no longer allowed)"
fi
if ! ls "$ROOT/etc/station/firmware-roots/"*.pem >/dev/null 2>&1 && [ "$DEV_UNSIGNED" = 0 ]; then
  note "WARNING: no manufacturer root provisioned: station-update refuses every firmware update the CSMS"
  note "         orders until one is (install.sh --firmware-root PEM)"
fi

# ---------------------------------------------------------------------------------------------
stage udev "stable /dev/esp32 name for the ESP32 serial adapter (${ESP32_USB[*]})"
rule_tmp="$(mktemp)"
{
  echo "# Written by provisioning/install.sh: the ESP32 charge controller appears as /dev/esp32."
  for ids in "${ESP32_USB[@]}"; do
    printf 'SUBSYSTEM=="tty", ATTRS{idVendor}=="%s", ATTRS{idProduct}=="%s", SYMLINK+="esp32", GROUP="dialout", MODE="0660"\n' \
      "${ids%%:*}" "${ids##*:}"
  done
} > "$rule_tmp"
UDEV_CHANGED=0
install_file "$rule_tmp" "$ROOT/etc/udev/rules.d/90-station-esp32.rules" 0644 && UDEV_CHANGED=1
rm -f "$rule_tmp"
if [ "$UDEV_CHANGED" = 1 ] && [ -z "$ROOT" ] && command -v udevadm >/dev/null; then
  udevadm control --reload && udevadm trigger --subsystem-match=tty
fi

# ---------------------------------------------------------------------------------------------
stage units "systemd units into /etc/systemd/system: ${UNITS[*]}"
UNITS_CHANGED=0
for unit in "${UNITS[@]}"; do
  install_file "$SRC/systemd/$unit" "$ROOT/etc/systemd/system/$unit" 0644 && UNITS_CHANGED=1
done
if [ "$UNITS_CHANGED" = 1 ] && [ -z "$ROOT" ]; then "$SYSTEMCTL" daemon-reload; fi

# ---------------------------------------------------------------------------------------------
stage commands "commands on PATH: /usr/local/bin/{${COMMANDS[*]}} -> the current release"
for cmd in "${COMMANDS[@]}"; do
  ensure_symlink "/opt/station/current/venv/bin/$cmd" "$ROOT/usr/local/bin/$cmd"
done

# ---------------------------------------------------------------------------------------------
stage enable "enable ${ENABLE_UNITS[*]} and (re)start the services"
if [ "$DO_ENABLE" = 0 ]; then
  note "skipped (--no-enable)"
elif [ -n "$ROOT" ]; then
  "$SYSTEMCTL" --root="$ROOT" enable "${ENABLE_UNITS[@]}" >/dev/null
  note "enabled in $ROOT (no services started in a tree)"
else
  "$SYSTEMCTL" enable "${ENABLE_UNITS[@]}" >/dev/null
  if [ "$RELEASE_CHANGED" = 1 ] || [ "$UNITS_CHANGED" = 1 ]; then
    "$SYSTEMCTL" restart station.service station-api.service
    changed "restarted station.service station-api.service"
  else
    "$SYSTEMCTL" start station.service station-api.service
    unchanged "services running"
  fi
fi

STAGE=done
if [ "$CHANGED" = 1 ]; then echo "==> done: release $VERSION installed (changes made)"; else
  echo "==> done: release $VERSION, nothing to change"; fi
