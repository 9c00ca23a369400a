#!/usr/bin/env bash
# Builds the Python example guests (guests/python/examples/*/app.py, with the
# SDK in guests/python/courier) into components with componentize-py:
# target/guests/python/NAME.wasm, or under the directory given as $1.
#
# componentize-py comes from $COMPONENTIZE_PY, else the virtualenv that
# scripts/setup.sh makes (target/toolchains/python), else PATH. A component
# newer than every source and the WIT is not built again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/guests/python}"
tool="${COMPONENTIZE_PY:-}"
if [[ -z "$tool" ]]; then
  if [[ -x "$root/target/toolchains/python/bin/componentize-py" ]]; then
    tool="$root/target/toolchains/python/bin/componentize-py"
  elif command -v componentize-py >/dev/null; then
    tool="$(command -v componentize-py)"
  else
    echo "componentize-py is not installed: run scripts/setup.sh --guests" >&2
    exit 2
  fi
fi
want="$(sed -n 's/^componentize-py==//p' "$root/guests/python/requirements.txt")"
have="$("$tool" --version | awk '{print $2}')"
if [[ "$have" != "$want" ]]; then
  echo "componentize-py $have found ($tool), $want wanted: run scripts/setup.sh --guests" >&2
  exit 2
fi
mkdir -p "$out"
for dir in "$root"/guests/python/examples/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if [[ -f "$wasm" ]] && [[ -z "$(find "$root/guests/python/courier" "$dir" "$root/wit" \
      -newer "$wasm" -type f -print -quit)" ]]; then
    continue
  fi
  echo "componentize-py: $name -> $wasm" >&2
  "$tool" -d "$root/wit" -w wasi:messaging/messaging@0.2.0-draft componentize \
    -p "$root/guests/python" -p "$dir" app -o "$wasm.tmp" >&2
  mv "$wasm.tmp" "$wasm"
done
