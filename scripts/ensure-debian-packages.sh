#!/usr/bin/env bash
# Installs Debian packages whose command is missing. Arguments: package:command pairs.
# Needs root (or sudo) and apt-get; says plainly what is missing otherwise.
set -euo pipefail
missing=()
for pair in "$@"; do
    package=${pair%%:*}
    command=${pair#*:}
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
run_as_root=()
[ "$(id -u)" -eq 0 ] || run_as_root=(sudo)
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install ${missing[*]} yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${run_as_root[@]}" apt-get update -qq
"${run_as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
