#!/usr/bin/env bash
# make demo: a whole batfleet fleet on one machine. A writer with an
# embedded nats-server, a synthetic load, three durable workers on
# different regions (one an --exec child process), one of them killed
# with SIGKILL half-way and restarted, then `worker status`.
# Everything it starts, it stops. Needs only the two binaries in bin/.
set -euo pipefail

EVENTS=${DEMO_EVENTS:-200000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/batfleet-demo.XXXXXX")
PIDS=()

cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ $rc -ne 0 ]; then
		echo "demo failed (exit $rc); logs:" >&2
		tail -n 20 "$WORK"/*.log >&2 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
deadline() { echo $(( $(date +%s) + $1 )); }

say "starting a writer with an embedded nats-server (data in $WORK)"
"$BIN/writer" --data "$WORK/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 2>"$WORK/writer.log" &
PIDS+=($!)
until NATS=$(grep -o 'writer ready: nats=[^ ]*' "$WORK/writer.log" | head -n1 | cut -d= -f2) && [ -n "$NATS" ]; do
	kill -0 "${PIDS[0]}" 2>/dev/null || { echo "writer exited" >&2; exit 1; }
	sleep 0.1
done
echo "writer serving journal 'main' on $NATS"

run_worker() { # name region checkpoint handler-args...
	local name=$1 region=$2 ckpt=$3; shift 3
	"$BIN/worker" --nats "$NATS" --region "$region" --checkpoint "$ckpt" --batch 256 --id "demo-$name" "$@" \
		2>>"$WORK/$name.log" &
	PIDS+=($!)
	eval "PID_$name=$!"
}

say "starting three durable workers"
run_worker orders "entity=order" orders --out "$WORK/orders.jsonl"
echo "  orders:   --region entity=order          --out orders.jsonl"
run_worker scope1 "scope=scope-1" scope-1 --out "$WORK/scope1.jsonl"
echo "  scope-1:  --region scope=scope-1         --out scope1.jsonl"
# mawk reads pipes in blocks unless told to be interactive; gawk and
# busybox awk hand each line over as it arrives.
# (Capture the version first: under pipefail, "awk ... | head" can fail
# with SIGPIPE when head exits before awk has written everything.)
AWK=awk
case "$(awk -W version 2>&1 </dev/null || true)" in *mawk*) AWK="awk -W interactive" ;; esac
run_worker cat2 "category=2" "category 2 (exec)" \
	--exec "$AWK -v count='$WORK/cat2.count' -f '$ROOT/scripts/demo-handler.awk'"
echo "  cat2:     --region category=2            --exec 'awk -f scripts/demo-handler.awk'"

say "appending $EVENTS synthetic events (1,000 entities, 4 scopes, 100-byte payloads)"
"$BIN/writer" append --nats "$NATS" --gen "$EVENTS" --rate $((EVENTS / 4)) 2>"$WORK/append.log" &
APPEND=$!
PIDS+=($APPEND)

lines() { [ -f "$1" ] && wc -l <"$1" | tr -d ' ' || echo 0; }
count() { local v=""; [ -f "$1" ] && v=$(tr -d ' \n' <"$1"); echo "${v:-0}"; }
LAST_PROGRESS=0
progress() { # a live line on a terminal, a line a second otherwise
	local line now
	line=$(printf '  delivered: orders %7s   scope-1 %7s   category-2 %7s ' \
		"$(lines "$WORK/orders.jsonl")" "$(lines "$WORK/scope1.jsonl")" "$(count "$WORK/cat2.count")")
	if [ -t 1 ]; then
		printf '\r%s' "$line"
	else
		now=$(date +%s)
		[ "$now" -gt "$LAST_PROGRESS" ] || [ "${1:-}" = force ] || return 0
		LAST_PROGRESS=$now
		printf '%s\n' "$line"
	fi
}

# SIGKILL can cut the last line of --out short (its batch was never
# committed, so it is delivered again); drop it before the restarted
# worker appends, so every line stays whole JSON.
trim_partial() {
	if [ -s "$1" ] && [ -n "$(tail -c 1 "$1")" ]; then
		head -n "$(wc -l < "$1")" "$1" > "$1.whole" && mv "$1.whole" "$1"
	fi
}

killed=0
stop_at=$(deadline 120)
while kill -0 "$APPEND" 2>/dev/null; do
	progress
	if [ $killed -eq 0 ] && [ "$(lines "$WORK/orders.jsonl")" -ge $((EVENTS / 4)) ]; then
		kill -KILL "$PID_orders"
		wait "$PID_orders" 2>/dev/null || true
		trim_partial "$WORK/orders.jsonl"
		printf '\n  killed the orders worker with SIGKILL half-way; restarting it\n'
		run_worker orders "entity=order" orders --out "$WORK/orders.jsonl"
		killed=1
	fi
	[ "$(date +%s)" -lt "$stop_at" ] || { echo "append did not finish in time" >&2; exit 1; }
	sleep 0.2
done
wait "$APPEND"
progress force
[ -t 1 ] && echo
tail -n1 "$WORK/append.log"

if [ $killed -eq 0 ]; then
	kill -KILL "$PID_orders"; wait "$PID_orders" 2>/dev/null || true
	trim_partial "$WORK/orders.jsonl"
	echo "  killed the orders worker with SIGKILL; restarting it"
	run_worker orders "entity=order" orders --out "$WORK/orders.jsonl"
fi

say "waiting for every worker to catch up"
stop_at=$(deadline 120)
while :; do
	progress
	status=$("$BIN/worker" status --nats "$NATS" --json 2>>"$WORK/status.log")
	lags=$(printf '%s' "$status" | grep -o '"lag_events": *-*[0-9]*' | grep -o -- '-*[0-9]*$' | sort -u | tr '\n' ' ')
	rows=$(printf '%s' "$status" | grep -c '"id"' || true)
	[ "$rows" -eq 3 ] && [ "$lags" = "0 " ] && break
	[ "$(date +%s)" -lt "$stop_at" ] || { echo "workers did not catch up: lags $lags" >&2; exit 1; }
	sleep 0.3
done
progress force
[ -t 1 ] && echo

say "worker status"
"$BIN/worker" status --nats "$NATS"

say "summary"
uniq_seqs() { grep -o '"seq":[0-9]*' "$1" | sort -u | wc -l | tr -d ' '; }
o_lines=$(lines "$WORK/orders.jsonl"); o_uniq=$(uniq_seqs "$WORK/orders.jsonl")
s_lines=$(lines "$WORK/scope1.jsonl"); s_uniq=$(uniq_seqs "$WORK/scope1.jsonl")
echo "  events appended:            $EVENTS"
echo "  orders (killed, restarted): $o_uniq distinct events, $((o_lines - o_uniq)) redelivered after the kill (at most one uncommitted batch of 256)"
echo "  scope-1:                    $s_uniq distinct events"
echo "  category 2 (exec handler):  $(count "$WORK/cat2.count") events counted by the child in its last life"
[ "$o_uniq" -eq $((EVENTS / 2)) ] || { echo "orders: expected $((EVENTS / 2)) distinct events" >&2; exit 1; }
[ "$((o_lines - o_uniq))" -le 256 ] || { echo "orders: more than one batch redelivered" >&2; exit 1; }
[ "$s_uniq" -eq $((EVENTS / 4)) ] || { echo "scope-1: expected $((EVENTS / 4)) distinct events" >&2; exit 1; }

say "stopping everything (SIGTERM: each worker finishes its batch and commits)"
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
echo "done."
