#!/usr/bin/env bash
# Runs `liminal bench` scenarios and the matching NATS scenarios of the
# peerbench load tool interleaved, on this machine, against servers this
# script starts on 127.0.0.1 and stops by PID. Writes RESULT lines to $OUT.
#
#   ROUNDS=3 scripts/bench-compare.sh
#   ROUNDS=1 SCALE=10 scripts/bench-compare.sh        # smoke run
#
# Needs: nats-server (apt-get install -y nats-server), a release build of
# Liminal (cargo build --release --bins), and peerbench built in release
# and a release build of peerbench (set PEERBENCH to its binary).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
FSYNC=${FSYNC:-never}                      # nats-server 2.9 acks JetStream writes before fsync
ONLY=${ONLY:-.}                            # regex over scenario names
PEERBENCH=${PEERBENCH:-/tmp/peerbench/target/release/peerbench}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
NATS_PORT=${NATS_PORT:-14222}
LIMINAL_PORT=${LIMINAL_PORT:-17400}
RUN_DIR=$(mktemp -d /tmp/liminal-bench.XXXXXX)
OUT=${OUT:-$RUN_DIR/results.txt}

for tool in nats-server "$PEERBENCH" "$BIN_DIR/liminal-server" "$BIN_DIR/liminal"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

cat > "$RUN_DIR/liminal.toml" <<TOML
listen_address = "127.0.0.1:$LIMINAL_PORT"
health_listen_address = "127.0.0.1:$((LIMINAL_PORT + 1))"
persistence_path = "$RUN_DIR/data"
drain_timeout_ms = 5000
auto_create_channels = true
fault_injection = true
fsync = "$FSYNC"

[[channels]]
name = "bench"
durable = true

[[channels]]
name = "orders"
schema = "orders.json"

[[channels]]
name = "orders-free"
TOML
cp config/schemas/orders.json "$RUN_DIR/orders.json"
cat > "$RUN_DIR/order.json" <<'JSON'
{"id":"ORD-00000001","sku":"ABC-12","quantity":2,"price":9.5,"currency":"EUR","customer":{"id":"c1","email":"a@example.com","name":"Ada"},"created_at":"2026-12-04T10:00:00Z","tags":["gift"],"status":"new","notes":null}
JSON

NATS_PID=""; LIMINAL_PID=""
stop_servers() {
    for pid in $NATS_PID $LIMINAL_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $NATS_PID $LIMINAL_PID; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$RUN_DIR/js" "$RUN_DIR/data"
}
trap stop_servers EXIT

nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN_DIR/js" -l "$RUN_DIR/nats.log" &
NATS_PID=$!
RUST_LOG=warn "$BIN_DIR/liminal-server" --config "$RUN_DIR/liminal.toml" > "$RUN_DIR/liminal.out" 2> "$RUN_DIR/liminal.log" &
LIMINAL_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$LIMINAL_PORT") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

NATS_URL="nats://127.0.0.1:$NATS_PORT"
LIMINAL="$BIN_DIR/liminal --server 127.0.0.1:$LIMINAL_PORT bench"
N_PUBSUB=$((1000000 / SCALE)); N_FANOUT=$((200000 / SCALE)); N_STREAM=$((200000 / SCALE)); N_REQ=$((20000 / SCALE))

scenario() { # name, command...
    local name=$1; shift
    [[ $name =~ $ONLY ]] || return 0
    echo "== $name" >&2
    local lines
    lines=$(timeout 150 "$@" 2>>"$RUN_DIR/errors.log" | grep '^RESULT') || true
    if [ -z "$lines" ]; then lines="RESULT scenario=$name status=failed"; fi
    while IFS= read -r line; do echo "$line label=$name"; done <<< "$lines" | tee -a "$OUT"
}

{
    echo "# date=$(date -Is) cores=$(nproc) rounds=$ROUNDS scale=$SCALE fsync=$FSYNC"
    echo "# $(nats-server --version) liminal=$(git rev-parse --short HEAD)"
} | tee "$OUT"

for round in $(seq "$ROUNDS"); do
    echo "# round $round" | tee -a "$OUT"
    scenario nats-pubsub "$PEERBENCH" pubsub --peer nats --nats-url "$NATS_URL" -n "$N_PUBSUB" --server-pid "$NATS_PID"
    scenario liminal-pubsub $LIMINAL pubsub -n "$N_PUBSUB"
    scenario nats-fanout "$PEERBENCH" fanout --peer nats --nats-url "$NATS_URL" -n "$N_FANOUT" --server-pid "$NATS_PID"
    scenario liminal-fanout $LIMINAL fanout -n "$N_FANOUT"
    scenario nats-js-publish "$PEERBENCH" js-publish --nats-url "$NATS_URL" -n "$N_STREAM" --server-pid "$NATS_PID"
    scenario liminal-publish $LIMINAL publish -n "$N_STREAM"
    scenario nats-js-publish-msgid "$PEERBENCH" js-publish --msg-id --nats-url "$NATS_URL" -n "$N_STREAM" --server-pid "$NATS_PID"
    scenario liminal-publish-keyed $LIMINAL publish --key -n "$N_STREAM"
    scenario nats-js-replay "$PEERBENCH" js-replay --nats-url "$NATS_URL" -n "$N_STREAM" --server-pid "$NATS_PID"
    scenario liminal-replay $LIMINAL replay -n "$N_STREAM"
    scenario liminal-publish-noschema $LIMINAL publish --channel orders-free --payload-file "$RUN_DIR/order.json" -n "$N_STREAM" --window 1024
    scenario liminal-publish-schema $LIMINAL publish --channel orders --payload-file "$RUN_DIR/order.json" -n "$N_STREAM" --window 1024
    scenario nats-reqreply "$PEERBENCH" reqreply --peer nats --nats-url "$NATS_URL" -n "$N_REQ" --server-pid "$NATS_PID"
    scenario liminal-conversation $LIMINAL conversation --crashes 200 --requests "$N_REQ" --warmup 1000
done
echo "results: $OUT" >&2
