#!/usr/bin/env bash
# Installs the system packages workflowd needs to build, test and run on Debian/Ubuntu, if any is
# missing, and checks that a Swift toolchain is present. Safe to run again: it does nothing when
# everything is installed. Uses sudo when not root.
set -euo pipefail

# openssl: the TLS test makes its own CA and certificates (not pulled in by the others on a
# minimal Debian image).
packages=(mariadb-server mariadb-client libmariadb-dev libuv1-dev socat pkg-config openssl)

say() { printf 'install-deps: %s\n' "$*" >&2; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "this script knows apt-get (Debian/Ubuntu) only; install by hand: ${packages[*]}"
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done

if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages present: ${packages[*]}"
else
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        say "missing packages: ${missing[*]}; run this script as root (sudo is not installed)"
        exit 1
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}" </dev/null
    for package in "${missing[@]}"; do
        installed "$package" || { say "error: $package is still not installed"; exit 1; }
    done
    say "installed: ${missing[*]}"
fi

# Swift is not an apt package here: check for it and say where it is expected.
if command -v swift >/dev/null 2>&1; then
    say "swift: $(swift --version 2>/dev/null | head -n 1)"
elif [ -x /opt/swift/usr/bin/swift ]; then
    say "swift is installed in /opt/swift/usr/bin but not on PATH; run: export PATH=/opt/swift/usr/bin:\$PATH"
    say "(scripts/test.sh, scripts/run.sh and .ci/run add it themselves)"
else
    say "error: no Swift toolchain found. Install Swift 6 (https://www.swift.org/install/linux/) and put its usr/bin on PATH."
    exit 1
fi
