#!/usr/bin/env bash
# Builds workflowd in release mode and runs its demo: installs missing system packages first.
#
#   scripts/run.sh [arguments for `workflowd demo`...]
#
# With no WORKFLOWD_DSN, workflowd starts its own private MariaDB (see README.md).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '==> [run.sh] %s\n' "$*" >&2; }

need_install=0
for tool in mariadbd mariadb-install-db mariadb-admin mariadb socat pkg-config; do
    PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || need_install=1
done
pkg-config --exists libuv libmariadb 2>/dev/null || need_install=1
if [ "$need_install" -eq 1 ]; then
    say "installing system packages"
    scripts/install-deps.sh
fi
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null 2>&1 || { scripts/install-deps.sh; exit 1; }
# workflowd's private MariaDB needs mariadbd, which Debian keeps in /usr/sbin.
export PATH="$PATH:/usr/sbin"

say "swift build -c release"
swift build -c release

say "swift run -c release workflowd demo $*"
exec swift run -c release workflowd demo "$@"
