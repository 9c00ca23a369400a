#!/usr/bin/env bash
# The soak: N numbered messages (default 1,000,000) through a release
# `courier run` host whose guest (`flaky`) traps on every thousandth one, on
# the durable embedded broker and on NATS JetStream; every message must come
# out handled or dead-lettered (0 lost, duplicates counted), and the host's
# resident memory is printed at the start, its peak, and at the end. The
# driver and checker are crates/courier-cli/tests/soak.rs.
#
#   scripts/soak.sh [N] [embedded|jetstream]
#
# Builds the release `courier` binary and the guests (wasm32-wasip2, through
# crates/test-programs) first: 28 minutes the first time here (2 cores shared).
# The run itself, 1,000,000 messages on a 2-core machine shared with other
# work: 7 minutes on the embedded broker and 10 on JetStream (the Soak
# section of docs/reliability.md has the figures). JetStream needs
# nats-server with JetStream on 127.0.0.1:4222 (COURIER_TEST_NATS_PORT): if
# it is not listening its soak is skipped, and says so. The test's default
# (20,000 messages) is the short form that runs with the other tests.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-1000000}"
target="${2:-}"
case "$n" in
  ''|*[!0-9_,]*) echo "usage: $0 [N] [embedded|jetstream]" >&2; exit 2 ;;
esac
case "$target" in
  '') filter=() ;;
  embedded) filter=(--exact durable_embedded_soak) ;;
  jetstream) filter=(--exact jetstream_soak) ;;
  *) echo "usage: $0 [N] [embedded|jetstream]" >&2; exit 2 ;;
esac

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release -p courier-cli
cargo test --release -p courier-cli --test soak --no-run

nats_port="${COURIER_TEST_NATS_PORT:-4222}"
if [ "$target" != embedded ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; then
  echo "soak: nats-server is not listening on 127.0.0.1:$nats_port: the JetStream soak is skipped (ignored)" >&2
fi

echo "soak: $n messages per target, started $(date -u '+%Y-%m-%d %H:%M:%S') UTC" >&2
COURIER_SOAK_N="$n" cargo test --release -p courier-cli --test soak -- \
  --nocapture --test-threads 1 "${filter[@]}"
