#!/usr/bin/env bash
# The one run command: a local 3-member etcd cluster, 3 coordinator replicas, a dataset
# and 4 demo workers, 2 task workers with a feed of demo tasks, then a live status view
# (leader, version, each worker's shards, task counts).
#
#   bash scripts/run.sh                      # until Ctrl-C
#   bash scripts/run.sh --kill-leader 20     # SIGKILL the leader after 20 s, watch the failover
#   bash scripts/run.sh --duration 60        # stop everything after 60 s
#   bash scripts/run.sh --data postgres      # the dataset in PostgreSQL (a throwaway server in .run/pg)
#
# Everything lives under .run/ (data dirs, logs, pids); it is wiped at each start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

KILL_LEADER=""; DURATION=""; WORKERS=4; DATA=etcd
while [ $# -gt 0 ]; do
  case "$1" in
    --kill-leader) KILL_LEADER="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    *) echo "usage: bash scripts/run.sh [--kill-leader SECONDS] [--duration SECONDS] [--workers N] [--data etcd|postgres]" >&2; exit 2 ;;
  esac
done

case "$DATA" in etcd|postgres) ;; *) echo "--data must be etcd or postgres" >&2; exit 2 ;; esac

RUN="$ROOT/.run"
rm -rf "$RUN"; mkdir -p "$RUN"
PIDS=()
PG_PID=""
cleanup() {
  trap - EXIT INT TERM
  echo; echo "[run] stopping everything"
  # Workers first (they leave gracefully), then replicas (the leader resigns), then etcd.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    if [ "$i" = 6 ] || [ "$i" = 3 ]; then sleep 1; fi # after the workers, after the replicas
  done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # PostgreSQL last (fast shutdown), after everything that reads it.
  if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null || true; sleep 1; kill -KILL "$PG_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ETCD_CLIENT=(2379 22379 32379); ETCD_PEER=(2380 22380 32380)
# etcd hygiene (README, "Operating etcd"): compact history older than 10 minutes (every
# watch of the coordinator re-reads when its revision was compacted, so the window only
# saves re-reads after short disconnections), and an explicit backend quota (etcd's default,
# 2 GiB) past which etcd raises its NOSPACE alarm and refuses writes until an operator acts.
# --pre-vote: a member that was cut off does not depose the healthy raft leader when it
# comes back (etcd 3.4's default is off; README, "Operating etcd").
ETCD_HYGIENE=(--auto-compaction-mode periodic --auto-compaction-retention 10m --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) --pre-vote)
CLUSTER=""
for i in 0 1 2; do CLUSTER+="${CLUSTER:+,}etcd-$i=http://127.0.0.1:${ETCD_PEER[$i]}"; done
for i in 0 1 2; do
  etcd --name "etcd-$i" --data-dir "$RUN/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[$i]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token shard-demo \
    "${ETCD_HYGIENE[@]}" >"$RUN/etcd-$i.log" 2>&1 &
  PIDS+=($!); echo $! >"$RUN/etcd-$i.pid"
done
ENDPOINTS="http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379"
for _ in $(seq 1 100); do
  if etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then break; fi
  sleep 0.1
done
echo "[run] etcd: 3 members at $ENDPOINTS (logs in .run/etcd-*.log)"

COORD="node packages/coordinator/bin/coordinator.js"
if [ "$DATA" = etcd ]; then
  $COORD data load --etcd "$ENDPOINTS" --group demo --count 200 >/dev/null
  echo "[run] dataset: 200 records (ids 000..199) under /shardmgr-data/demo/"
else
  # A throwaway PostgreSQL in .run/pg on port 55432. It refuses to run as root: as root it
  # runs as the postgres (or nobody) user. The password stays in a file the replicas read
  # (dataSource.passwordFile): never in etcd.
  PGBIN="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  AS=()
  if [ "$(id -u)" = 0 ]; then
    PGUSER_OS=postgres; id -u postgres >/dev/null 2>&1 || PGUSER_OS=nobody
    AS=(setpriv "--reuid=$(id -u "$PGUSER_OS")" "--regid=$(id -g "$PGUSER_OS")" --clear-groups --)
  fi
  mkdir -p "$RUN/pg"; head -c 18 /dev/urandom | base64 >"$RUN/pg/password"; chmod 600 "$RUN/pg/password"
  [ "$(id -u)" = 0 ] && chown -R "$PGUSER_OS" "$RUN/pg"
  "${AS[@]}" "$PGBIN/initdb" -D "$RUN/pg/data" -U postgres --auth=scram-sha-256 --pwfile="$RUN/pg/password" -E UTF8 --no-locale --no-sync >"$RUN/pg/initdb.log" 2>&1
  "${AS[@]}" "$PGBIN/postgres" -D "$RUN/pg/data" -p 55432 -c listen_addresses=127.0.0.1 -c "unix_socket_directories=$RUN/pg" >"$RUN/pg/postgres.log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 1 100); do
    if PGPASSWORD="$(cat "$RUN/pg/password")" psql -h 127.0.0.1 -p 55432 -U postgres -c 'select 1' >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  etcdctl --endpoints "$ENDPOINTS" put /shardmgr/groups/demo/config \
    "{\"dataSource\":{\"kind\":\"postgres\",\"table\":\"demo_items\",\"host\":\"127.0.0.1\",\"port\":55432,\"user\":\"postgres\",\"passwordFile\":\"$RUN/pg/password\"}}" >/dev/null
  echo "[run] PostgreSQL on 127.0.0.1:55432 (data in .run/pg; the group config names it, the password stays in .run/pg/password)"
fi

ADDRS=""
for i in 1 2 3; do
  $COORD serve --etcd "$ENDPOINTS" --id "rm-$i" --listen "127.0.0.1:5005$i" --http-listen "127.0.0.1:946$((3 + i))" >"$RUN/rm-$i.log" 2>&1 &
  PIDS+=($!); echo $! >"$RUN/rm-$i.pid"
  ADDRS+="${ADDRS:+,}127.0.0.1:5005$i"
done
echo "[run] replicas: rm-1..3 on $ADDRS (HTTP status/metrics on 127.0.0.1:9464-9466; logs in .run/rm-*.log)"
echo "[run] console: open http://127.0.0.1:9464/ (any replica: 9464-9466), or follow it in a terminal: pnpm coordinator watch --etcd $ENDPOINTS"

if [ "$DATA" = postgres ]; then
  # Uploaded through a replica (PutShardData), which creates the table on first use.
  for _ in $(seq 1 50); do
    if OUT=$($COORD data load --etcd "$ENDPOINTS" --group demo --count 200 2>&1); then break; fi
    sleep 0.2
  done
  echo "[run] dataset: $OUT"
  echo "[run] try: PGPASSWORD=\$(cat .run/pg/password) psql -h 127.0.0.1 -p 55432 -U postgres -c 'select shard_hash % 4 as shard, count(*) from demo_items group by 1'"
fi

for i in $(seq 1 "$WORKERS"); do
  node examples/dist/dataset-job.js --node "worker-$i" --group demo --coordinators "$ADDRS" --loop >"$RUN/worker-$i.log" 2>&1 &
  PIDS+=($!); echo $! >"$RUN/worker-$i.pid"
done
echo "[run] workers: worker-1..$WORKERS (JSON event lines in .run/worker-*.log)"
# The scheduling half: two task workers in group "jobs" (2 slots each) and a feed of demo
# tasks (4 per second, each working 0.2-1.5 s), visible in the console and in the view below.
for i in 1 2; do
  node examples/dist/task-worker.js --node "task-worker-$i" --group jobs --coordinators "$ADDRS" --capacity 2 >"$RUN/task-worker-$i.log" 2>&1 &
  PIDS+=($!); echo $! >"$RUN/task-worker-$i.pid"
done
node examples/dist/task-feed.js --group jobs --rate 4 --coordinators "$ADDRS" >"$RUN/task-feed.log" 2>&1 &
PIDS+=($!); echo $! >"$RUN/task-feed.pid"
echo "[run] tasks: task-worker-1..2 in group jobs, 4 demo tasks/s from examples/task-feed (.run/task-*.log)"
echo "[run] try: pnpm coordinator tasks list --etcd $ENDPOINTS --group jobs --state running"
echo "[run] try: etcdctl --endpoints $ENDPOINTS get --prefix /shardmgr/groups/demo/assignment"
echo "[run]      kill -9 \$(cat .run/rm-1.pid)   # kill a replica and watch the view below"

START=$(date +%s)
KILLED=""
while :; do
  NOW=$(date +%s)
  if [ -n "$KILL_LEADER" ] && [ -z "$KILLED" ] && [ $((NOW - START)) -ge "$KILL_LEADER" ]; then
    LEADER=$($COORD status --etcd "$ENDPOINTS" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).leader?.id??""))')
    if [ -n "$LEADER" ]; then
      VICTIM=$(cat "$RUN/$LEADER.pid")
      # Reaped at once with its status line discarded: no "Killed" job line in the view.
      kill -KILL "$VICTIM" && { wait "$VICTIM" 2>/dev/null || true; } && KILLED="$LEADER at +$((NOW - START))s"
    fi
  fi
  if [ -n "$DURATION" ] && [ $((NOW - START)) -ge "$DURATION" ]; then break; fi
  OUT=$($COORD status --etcd "$ENDPOINTS" 2>&1 || true)
  [ -t 1 ] && printf '\033[2J\033[H'
  # The clock and the offset are the same instant (the status read above takes a moment).
  echo "== $(date -d "@$NOW" +%T)  (+$((NOW - START))s)${KILLED:+   SIGKILLed leader $KILLED}"
  echo "$OUT"
  for i in $(seq 1 "$WORKERS"); do
    n=$(grep -c '"event":"processed"' "$RUN/worker-$i.log" 2>/dev/null || true)
    echo "  worker-$i processed ${n:-0} items"
  done
  # The feed's last JSON line, read out: what it submitted and the finals its watch saw.
  FEED=$(tail -n 1 "$RUN/task-feed.log" 2>/dev/null | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      try {
        const f = JSON.parse(s), n = (k) => f.finished?.[k] ?? 0;
        console.log(`submitted ${f.submitted}, succeeded ${n("succeeded")}, failed ${n("failed")}, cancelled ${n("cancelled")} (as of ${f.time.slice(11, 19)})`);
      } catch {}
    });' || true)
  [ -n "$FEED" ] && echo "  task feed (group jobs): $FEED"
  sleep 1
done
