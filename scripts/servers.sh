#!/usr/bin/env bash
# Start/stop throwaway servers on loopback for the tests.
#   scripts/servers.sh start DIR   -> writes DIR/env (export lines) and starts postgres + redis
#   scripts/servers.sh stop DIR    -> stops what start started
set -euo pipefail

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  dirname "$(command -v initdb)"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir=$1
  mkdir -p "$dir"
  chmod 755 "$dir"
  local bin pgport redisport
  bin=$(pg_bin)
  pgport=$(free_port)
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
  as_pg "$bin/initdb" -D "$dir/pg/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/pg-init.log" 2>&1
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pgport -k $dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null
  echo "export COLLAPSEWATCH_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$pgport/postgres" >"$dir/env"

  redisport=$(free_port)
  redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
  for _ in $(seq 50); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export COLLAPSEWATCH_TEST_REDIS_URL=redis://127.0.0.1:$redisport/0" >>"$dir/env"
  echo "export COLLAPSEWATCH_TEST_SERVERS_DIR=$dir" >>"$dir/env"
}

stop() {
  local dir=$1 bin
  bin=$(pg_bin)
  if [ -d "$dir/pg/data" ]; then as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
}

"$1" "$2"
