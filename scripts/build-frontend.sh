#!/usr/bin/env bash
# Builds the browser bundles: frontend/src/{desktop,mobile}.{js,css} ->
# app/web/static/dist/ (content-hashed chunks), and the mobile page's service worker
# frontend/src/sw.js -> app/web/static/dist/sw.js (one classic script under a stable
# name: GET /sw.js serves it, prefixed with the shell's version and URLs). Installs the
# locked npm packages first, only when node_modules is missing or package-lock.json
# changed since the last install (stamp file in node_modules).
#
#   scripts/build-frontend.sh            # into app/web/static/dist, swapped in whole
#   scripts/build-frontend.sh DIRECTORY  # into DIRECTORY (new or empty), the app's untouched
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
frontend="$root/frontend"

out=""
if [ $# -ge 1 ]; then
    case "$1" in /*) out="$1" ;; *) out="$PWD/$1" ;; esac
    if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
        echo "build-frontend: $1 must be a new or an empty directory" >&2
        exit 2
    fi
fi
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
# go. The app's directory is replaced only once the new one is complete (staged outside
# static/, so a half-built one is never served), one build at a time.
if [ -n "$out" ]; then
    mkdir -p "$out"
    VIRTUOSO_DIST="$(cd "$out" && pwd)" npm run --silent build
    exit 0
fi
web="$root/app/web"
dist="$web/static/dist"
exec 9>"$web/.dist.lock"
flock 9
rm -rf "$web"/.dist-new-* "$web"/.dist-old-*  # left by a build that was killed
staging="$(mktemp -d "$web/.dist-new-XXXXXX")"
trap 'rm -rf "$staging"' EXIT
VIRTUOSO_DIST="$staging" npm run --silent build
chmod 755 "$staging"
old="$web/.dist-old-$$"
if [ -d "$dist" ]; then
    mv -T "$dist" "$old"
fi
mv -T "$staging" "$dist"
rm -rf "$old"
