#!/usr/bin/env bash
# Builds the browser bundles: frontend/src/{desktop,mobile}.{js,css} ->
# app/web/static/dist/ (content-hashed chunks), and the mobile page's service worker
# frontend/src/sw.js -> app/web/static/dist/sw.js (one classic script under a stable
# name: GET /sw.js serves it, prefixed with the shell's version and URLs). Installs the
# locked npm packages first, only when node_modules is missing or package-lock.json
# changed since the last install (stamp file in node_modules).
#
#   scripts/build-frontend.sh            # into app/web/static/dist, swapped in whole
#   scripts/build-frontend.sh DIRECTORY  # into DIRECTORY (emptied first), the app's untouched
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
frontend="$root/frontend"
stamp="$frontend/node_modules/.virtuoso-lock.sha256"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-frontend: '$tool' not found; install Node.js 20 or newer with npm" \
            "(Debian/Ubuntu: apt-get install nodejs npm, or https://nodejs.org)" >&2
        exit 1
    fi
done

cd "$frontend"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    echo "build-frontend: installing npm packages (npm ci)"
    npm ci --no-audit --no-fund
    echo "$lock_sum" >"$stamp"
fi

# Chunks have content-hashed names: each build starts from an empty directory so old ones
# go. The app's directory is replaced only once the new one is complete, so a server (or a
# test) reading it meanwhile never finds it half-built.
if [ $# -ge 1 ]; then
    rm -rf "$1"
    mkdir -p "$1"
    VIRTUOSO_DIST="$(cd "$1" && pwd)" npm run --silent build
    exit 0
fi
dist="$root/app/web/static/dist"
staging="$(mktemp -d "$root/app/web/static/.dist-new-XXXXXX")"
trap 'rm -rf "$staging"' EXIT
VIRTUOSO_DIST="$staging" npm run --silent build
chmod 755 "$staging"
if [ -d "$dist" ]; then
    old="$(mktemp -d "$root/app/web/static/.dist-old-XXXXXX")"
    mv "$dist" "$old/dist"
    mv "$staging" "$dist"
    rm -rf "$old"
else
    mv "$staging" "$dist"
fi
