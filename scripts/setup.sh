#!/usr/bin/env bash
# Installs what a fresh machine lacks to build Courier and its guests.
#
# With --guests it also installs the Python and JavaScript guest toolchains
# (the versions guests/python/requirements.txt and guests/js/package-lock.json
# pin), which the polyglot guest tests and scripts/guests-{python,js}.sh need:
# componentize-py in a virtualenv under target/toolchains/python, and
# componentize-js under guests/js/node_modules.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
[[ "${1:-}" == "--guests" ]] || exit 0

venv="$root/target/toolchains/python"
want="$(sed -n 's/^componentize-py==//p' "$root/guests/python/requirements.txt")"
if [[ "$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" != "$want" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$root/guests/python/requirements.txt"
fi

want="$(node -p 'require(process.argv[1]).packages["node_modules/@bytecodealliance/componentize-js"].version' \
  "$root/guests/js/package-lock.json")"
have="$(node -p 'try { require(process.argv[1]).version } catch { "" }' \
  "$root/guests/js/node_modules/@bytecodealliance/componentize-js/package.json")"
if [[ "$have" != "$want" ]]; then
  (cd "$root/guests/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
