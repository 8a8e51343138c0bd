#!/bin/sh
# Install the EdgeKeep gateway on Raspberry Pi OS bookworm (arm64) or Debian bookworm.
#
#   sudo hw/rpi/install.sh                    install or upgrade; safe to run again
#   hw/rpi/install.sh --dry-run               print every action, change nothing
#   hw/rpi/install.sh --prefix /tmp/root      stage files under a root (like DESTDIR);
#                                             system steps (apt, users, pip, npm, systemd)
#                                             are printed, not run
# Options: --arch arm64|amd64 (default: dpkg's), --src DIR (default: this checkout).
# What it does, and what each file is for: docs/operations.md.
set -eu

PREFIX=""
DRY=0
ARCH=""
SRC=$(cd "$(dirname "$0")/../.." && pwd)
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --prefix) PREFIX=${2%/}; shift ;;
        --arch) ARCH=$2; shift ;;
        --src) SRC=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$ARCH" ] || ARCH=$(dpkg --print-architecture)
case "$ARCH" in
    arm64|amd64) ;;
    *) echo "install.sh: unsupported architecture $ARCH (arm64 or amd64)" >&2; exit 2 ;;
esac

OPT=/opt/edgekeep
ETC=/etc/edgekeep
DATA=/var/lib/edgekeep
LOG=/var/log/edgekeep
USER_NAME=edgekeep
APT_PACKAGES="mosquitto mosquitto-clients libisal2 nodejs npm python3 python3-venv"
# package.json pins the amd64 anvil only (an optionalDependency); a Pi needs this one.
ANVIL_ARM64="@foundry-rs/anvil-linux-arm64@1.7.1"
SYSTEM=1                                  # run steps that change the live system
[ -z "$PREFIX" ] || SYSTEM=0
[ "$DRY" = 0 ] || SYSTEM=0
if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or use --dry-run / --prefix)" >&2
    exit 1
fi

say() { echo "$*"; }

# A step on the live system: run it, or print it when staging or dry-running.
sys() {
    if [ "$SYSTEM" = 1 ]; then say "+ $*"; "$@"; else say "would run: $*"; fi
}

# A file step under the prefix: done unless dry-running.
fs() {
    say "+ $*"
    [ "$DRY" = 1 ] || "$@"
}

as_user() {
    sys runuser -u "$USER_NAME" -- "$@"
}

dir() {  # dir MODE PATH [OWNER]
    if [ -d "$PREFIX$2" ]; then say "ok: $2"; else fs install -d -m "$1" "$PREFIX$2"; fi
    [ "$SYSTEM" = 0 ] || [ -z "${3:-}" ] || chown "$3:$3" "$PREFIX$2"
}

render() {  # render TEMPLATE DEST MODE [keep]: a copy with @ETC@ etc. filled in
    tmp=$(mktemp)
    sed -e "s|@OPT@|$OPT|g" -e "s|@ETC@|$ETC|g" -e "s|@DATA@|$DATA|g" -e "s|@LOG@|$LOG|g" \
        "$SRC/hw/rpi/$1" >"$tmp"
    if [ -e "$PREFIX$2" ] && { [ "${4:-}" = keep ] || cmp -s "$tmp" "$PREFIX$2"; }; then
        say "ok: $2"
        CHANGED_NOW=0
    else
        say "+ install -m $3 hw/rpi/$1 $2"
        [ "$DRY" = 1 ] || install -D -m "$3" "$tmp" "$PREFIX$2"
        CHANGED_NOW=1
    fi
    rm -f "$tmp"
}

say "== EdgeKeep install: arch $ARCH, source $SRC, root ${PREFIX:-/}$( [ "$DRY" = 1 ] && echo ', dry run')"

say "-- packages"
sys apt-get update
sys apt-get install -y --no-install-recommends $APT_PACKAGES
# The stock broker would hold port 1883; EdgeKeep runs its own (edgekeep-broker.service).
sys systemctl disable --now mosquitto.service

say "-- user and directories"
if [ "$SYSTEM" = 1 ] && id "$USER_NAME" >/dev/null 2>&1; then
    say "ok: user $USER_NAME"
else
    sys useradd --system --user-group --home-dir "$DATA" --shell /usr/sbin/nologin "$USER_NAME"
fi
dir 0750 "$DATA" "$USER_NAME"
dir 0750 "$DATA/broker" "$USER_NAME"
dir 0750 "$DATA/chain" "$USER_NAME"
dir 0750 "$LOG" "$USER_NAME"
dir 0755 "$ETC/mosquitto.d"

say "-- code, venv and node tools in $OPT"
dir 0755 "$OPT"
for part in agent gateway hw tools firmware; do
    if [ -d "$SRC/$part" ]; then fs cp -a "$SRC/$part" "$PREFIX$OPT/"; fi
done
for f in pyproject.toml package.json package-lock.json; do
    fs install -D -m 0644 "$SRC/$f" "$PREFIX$OPT/$f"
done
if [ -x "$PREFIX$OPT/venv/bin/python" ]; then say "ok: $OPT/venv"; else sys python3 -m venv "$OPT/venv"; fi
# Editable, so that the gateway finds $OPT/node_modules (anvil) beside its code.
sys "$OPT/venv/bin/pip" install --quiet -e "$OPT"
sys npm ci --prefix "$OPT" --no-audit --no-fund
if [ "$ARCH" = arm64 ]; then
    sys npm install --prefix "$OPT" --no-save --no-audit --no-fund "$ANVIL_ARM64"
fi

say "-- configuration"
render mosquitto.conf "$ETC/mosquitto.conf" 0644
render gateway.toml "$ETC/gateway.toml" 0644 keep
if [ -e "$PREFIX$ETC/chain.key" ]; then
    say "ok: $ETC/chain.key"
else
    # anvil's first dev account: public knowledge, for the local chain only.
    key=$(sed -n 's/^DEFAULT_DEV_KEY = "\(0x[0-9a-f]*\)".*/\1/p' "$SRC/gateway/chain/client.py")
    [ -n "$key" ] || { echo "install.sh: no DEFAULT_DEV_KEY in gateway/chain/client.py" >&2; exit 1; }
    say "+ write $ETC/chain.key (anvil dev key)"
    if [ "$DRY" = 0 ]; then
        (umask 027; echo "$key" >"$PREFIX$ETC/chain.key")
        [ "$SYSTEM" = 0 ] || chgrp "$USER_NAME" "$PREFIX$ETC/chain.key"
    fi
fi
render journald.conf /etc/systemd/journald.conf.d/edgekeep.conf 0644
render edgekeep.logrotate /etc/logrotate.d/edgekeep 0644
as_user "$OPT/venv/bin/python" -m gateway broker init --dir "$DATA/broker"

say "-- services"
UNITS_CHANGED=0
for unit in edgekeep-broker edgekeep-chain edgekeep-gateway; do
    render "$unit.service" "/etc/systemd/system/$unit.service" 0644
    [ "$CHANGED_NOW" = 0 ] || UNITS_CHANGED=1
done
[ "$UNITS_CHANGED" = 0 ] || sys systemctl daemon-reload
sys systemctl enable edgekeep-broker.service edgekeep-chain.service edgekeep-gateway.service
# restart, not start: an upgrade must run the new code and config.
sys systemctl restart edgekeep-broker.service edgekeep-chain.service edgekeep-gateway.service

say "== done. Add a device: sudo -u $USER_NAME $OPT/venv/bin/python -m gateway broker add-device --dir $DATA/broker --device <id>"
