#!/usr/bin/env bash
# Makes sure the broker services used by the tests run on loopback, starting
# any that is down. On a laptop without them it warns (the tests of those
# backends are reported ignored); with CI=true a missing broker is an error.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  return 1
}

start() {
  local name=$1 port=$2; shift 2
  up "$port" && return 0
  if command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; then
    echo "brokers: starting $name" >&2
    "$@" >/dev/null 2>&1 || true
    wait_up "$port" && return 0
  fi
  if [ "${CI:-}" = "true" ]; then
    echo "brokers: $name is not running on 127.0.0.1:$port and could not be started" >&2
    return 1
  fi
  echo "brokers: $name is not available on 127.0.0.1:$port; its tests will be ignored" >&2
  return 0
}

# tansu, the Kafka-protocol broker of the Kafka tests: from crates.io, a pinned
# version, built once into a cache directory, so later runs find it at once.
# An unoptimised build (about 4 minutes on 2 cores, against about 25 for a
# release build) is fast enough for the tests. COURIER_TANSU may name another
# binary.
TANSU_VERSION=0.6.0
# Not ~/.cache/courier: that is the compile cache of courier itself, whose
# clean-up removes files it does not know.
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/courier-brokers"
tansu_bin() {
  if [ -n "${COURIER_TANSU:-}" ]; then echo "$COURIER_TANSU"; return 0; fi
  local root="$CACHE/tansu-$TANSU_VERSION"
  if ! [ -x "$root/bin/tansu" ]; then
    echo "brokers: building tansu $TANSU_VERSION (cargo install --debug, once)" >&2
    # The in-memory storage engine (memory://) needs the `dynostore` feature.
    CARGO_PROFILE_DEV_DEBUG=0 cargo install tansu --version "$TANSU_VERSION" --features dynostore \
      --locked --debug --quiet --root "$root" --target-dir "$CACHE/tansu-build" >&2 || return 1
    rm -rf "$CACHE/tansu-build"
  fi
  echo "$root/bin/tansu"
}

# Debian 12's kcat links librdkafka 2.0.2, which cannot read tansu's answer to
# ApiVersions ("Read underflow"). The interop test runs kcat with the newer
# librdkafka of the confluent-kafka wheel (pinned) on its library path.
CONFLUENT_KAFKA_VERSION=2.16.2
kcat_librdkafka() {
  local dir="$CACHE/librdkafka-$CONFLUENT_KAFKA_VERSION"
  [ -e "$dir/librdkafka.so.1" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$tmp" \
    "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >&2 || { rm -rf "$tmp"; return 1; }
  python3 -m zipfile -e "$tmp"/confluent_kafka-*.whl "$tmp/wheel" >/dev/null || { rm -rf "$tmp"; return 1; }
  mkdir -p "$dir"
  cp "$tmp"/wheel/confluent_kafka.libs/librdkafka-*.so.1 "$dir/librdkafka.so.1"
  rm -rf "$tmp"
}

start_tansu() {
  up 9092 && return 0
  local bin
  bin=$(tansu_bin) || bin=missing-tansu
  mkdir -p /var/log 2>/dev/null || true
  start tansu 9092 setsid -f "$bin" broker --storage-engine memory://tansu/ \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092
}

# The brokers' own command-line tools, used by the interop tests.
tools() {
  local missing=()
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  if ! kcat_librdkafka; then
    echo "brokers: could not fetch librdkafka for kcat (confluent-kafka $CONFLUENT_KAFKA_VERSION)" >&2
    [ "${CI:-}" = "true" ] && return 1
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "brokers: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 && return 0
  fi
  if [ "${CI:-}" = "true" ]; then
    echo "brokers: missing ${missing[*]} and could not install them" >&2
    return 1
  fi
  echo "brokers: missing ${missing[*]}; the interop tests will fail" >&2
}

ensure() {
  local failed=0
  tools || failed=1
  mkdir -p /var/lib/nats-server /var/lib/redis /var/log/redis 2>/dev/null || true
  start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server \
    -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || failed=1
  start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || failed=1
  start mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf || failed=1
  start rabbitmq 5672 rabbitmq-server -detached || failed=1
  start_tansu || failed=1
  return $failed
}

case "${1:-ensure}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
