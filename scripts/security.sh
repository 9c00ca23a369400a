#!/usr/bin/env bash
# Runs the security tests of docs/security.md, and only those: grants and
# channel checks on every backend, credentials and TLS against private
# brokers, the HTTP ingress's tokens and TLS, and the checks of secrets in
# the configuration. `scripts/test.sh` runs them too, with everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/brokers.sh ensure
cargo test -p courier-broker -- secret tls pattern
cargo test -p courier-config
cargo test -p courier-mqtt -- topics
cargo test -p courier-runtime --test credentials --test tls
cargo test -p courier-runtime --test conformance -- guests_stay channels_valid
cargo test -p courier-cli --test cli -- ingress
