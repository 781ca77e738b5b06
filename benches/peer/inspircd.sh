#!/usr/bin/env bash
# Side by side on this machine: InspIRCd (Debian's package) and chatd's own IRC gateway,
# driven by the same load generator (`chatd bench irc`) with the same parameters, in
# alternating rounds. See docs/bench-peer.md for the method and what is (not) fair.
#
#   benches/peer/inspircd.sh [ROUNDS]        # default 3 rounds: InspIRCd, chatd, InspIRCd, chatd…
#
# Environment: DURATION (s per phase, 10), PAIRS (50), RATE (10000), WINDOW (64),
# BODY (200), OUT (JSON lines of every run; default a file in the temporary directory, kept).
# Needs root for apt-get when InspIRCd is not installed. Everything listens on 127.0.0.1 only.
set -euo pipefail

ROUNDS="${1:-3}"
DURATION="${DURATION:-10}"
PAIRS="${PAIRS:-50}"
RATE="${RATE:-10000}"
WINDOW="${WINDOW:-64}"
BODY="${BODY:-200}"

cd "$(dirname "$0")/../.."
CHATD=target/release/chatd

if ! command -v inspircd >/dev/null 2>&1; then
    echo "== installing inspircd (apt-get)" >&2
    apt-get install -y inspircd >/dev/null || { apt-get update >/dev/null && apt-get install -y inspircd >/dev/null; }
fi
# Debian's package starts a system instance where an init system runs; this script runs its own.
if [[ ! -x "$CHATD" ]]; then
    echo "== building $CHATD" >&2
    cargo build --release --locked --bin chatd
fi

WORK="$(mktemp -d -t chatd-peer-XXXXXX)"
OUT="${OUT:-$WORK/results.jsonl}"
INSPIRCD_PID=""
cleanup() {
    if [[ -n "$INSPIRCD_PID" ]] && kill -0 "$INSPIRCD_PID" 2>/dev/null; then
        kill "$INSPIRCD_PID" 2>/dev/null || true
        wait "$INSPIRCD_PID" 2>/dev/null || true
    fi
    # Keep the results; drop InspIRCd's files.
    rm -rf "$WORK/inspircd"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PORT="$(free_port)"
mkdir -p "$WORK/inspircd"
CONF="$WORK/inspircd/inspircd.conf"
# InspIRCd 3: one server on 127.0.0.1 only, and one connect class for 127.0.0.1 without flood
# control: commandrate (millicommands/s) far above any rate the bench offers, a penalty
# threshold it never reaches, fakelag off, queues of 256 MiB, no DNS or ident lookups.
cat > "$CONF" <<CONF
<config format="xml">
<server name="peer.bench.local" description="chatd bench peer" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="$PORT" type="clients">
<connect name="bench"
         allow="127.0.0.1"
         timeout="60"
         pingfreq="600"
         hardsendq="268435456"
         softsendq="268435456"
         recvq="268435456"
         threshold="1000000"
         commandrate="1000000000"
         fakelag="no"
         localmax="1000"
         globalmax="1000"
         limit="5000"
         maxconnwarn="no"
         resolvehostnames="no"
         useident="no">
<connect deny="*" reason="bench server: 127.0.0.1 only">
<pid file="$WORK/inspircd/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="$WORK/inspircd/inspircd.log">
<performance softlimit="4096" somaxconn="128" netbuffersize="65536">
<security maxtargets="20">
<limits maxnick="30">
CONF

echo "== starting $(inspircd --version 2>/dev/null | head -1) on 127.0.0.1:$PORT" >&2
inspircd --config "$CONF" --nofork --runasroot >"$WORK/inspircd/stdout.log" 2>&1 &
INSPIRCD_PID=$!
for _ in $(seq 100); do
    if ! kill -0 "$INSPIRCD_PID" 2>/dev/null; then
        echo "inspircd exited at start:" >&2
        cat "$WORK/inspircd/stdout.log" "$WORK/inspircd/inspircd.log" >&2 2>/dev/null || true
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

ARGS=(bench irc --json --duration "$DURATION" --pairs "$PAIRS" --rate "$RATE" --window "$WINDOW" --body "$BODY")
echo "== parameters: ${ARGS[*]:1}; $ROUNDS rounds; results in $OUT" >&2
for round in $(seq "$ROUNDS"); do
    for server in inspircd chatd; do
        echo "== round $round: $server ($(uptime | sed 's/.*load/load/'))" >&2
        if [[ "$server" == inspircd ]]; then
            "$CHATD" "${ARGS[@]}" --irc-server "127.0.0.1:$PORT"
        else
            "$CHATD" "${ARGS[@]}" --durability full
        fi | sed "s/^{/{\"round\":$round,\"peer\":\"$server\",/" | tee -a "$OUT"
    done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"\n{'round':>5}  {'server':<9} {'phase':<11} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} {'max ms':>8}  lost")
for r in rows:
    print(f"{r['round']:>5}  {r['peer']:<9} {r.get('phase','?'):<11} {r.get('delivered_per_sec',0):>11,.0f} "
          f"{r.get('p50_ms',0):>8.2f} {r.get('p99_ms',0):>8.2f} {r.get('p999_ms',0):>8.2f} {r.get('max_ms',0):>8.2f}  {r.get('lost','?')}")
PY
