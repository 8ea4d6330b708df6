#!/usr/bin/env bash
# Start throwaway Redis and PostgreSQL on loopback for the Feast `production` profile.
#
#   .ci/services.sh [start|stop|env]      (default: start)
#
# start: installs redis-server / postgresql from Debian packages when missing (needs root),
#        starts both with data under $LEARNREC_SERVICES_DIR, creates the db and user, and
#        prints the `export` lines for the LEARNREC_FEAST_* variables. Idempotent: running
#        it again reuses the running servers and the same password.
# stop:  stops both servers (the data dir is kept; delete it to start from scratch).
# env:   prints the export lines only.
#
# Use:  eval "$(.ci/services.sh start | grep '^export ')"
#
# Settings (environment): LEARNREC_SERVICES_DIR (default /tmp/learnrec-services),
# LEARNREC_SERVICES_REDIS_PORT (6390), LEARNREC_SERVICES_PG_PORT (5440),
# LEARNREC_SERVICES_PG_DB (learnrec), LEARNREC_SERVICES_PG_USER (learnrec).
# The ports are not the defaults so that a system Redis/PostgreSQL is left alone.
set -euo pipefail

ACTION="${1:-start}"
DIR="${LEARNREC_SERVICES_DIR:-/tmp/learnrec-services}"
REDIS_PORT="${LEARNREC_SERVICES_REDIS_PORT:-6390}"
PG_PORT="${LEARNREC_SERVICES_PG_PORT:-5440}"
PG_DB="${LEARNREC_SERVICES_PG_DB:-learnrec}"
PG_USER="${LEARNREC_SERVICES_PG_USER:-learnrec}"
PG_DATA="$DIR/pg/data"
PG_SOCK="$DIR/pg/sock"
REDIS_DIR="$DIR/redis"
PW_FILE="$DIR/pg/password"

log() { echo "[services] $*" >&2; }

# PostgreSQL refuses to run as root; as root we run it as the `postgres` system user
# (created by the Debian package), otherwise as ourselves.
if [ "$(id -u)" = 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

pg_bindir() {
  # Newest installed server version (Debian layout); /usr/local/bin/postgres on the dev
  # machine is only a symlink into this tree.
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  echo ""
}

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  [ -n "$(pg_bindir)" ] || pkgs+=(postgresql postgresql-contrib)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      log "missing ${pkgs[*]} and not root: install them first (apt-get install -y ${pkgs[*]})"
      exit 1
    fi
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  # pgvector is optional (the offline store does not need it); Debian 12 main does not
  # ship it, later releases and the PGDG repository do.
  local ver
  ver=$(basename "$(dirname "$(pg_bindir)")")
  if [ "$(id -u)" = 0 ] && [ ! -f "/usr/share/postgresql/$ver/extension/vector.control" ]; then
    if apt-cache policy "postgresql-$ver-pgvector" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      log "installing postgresql-$ver-pgvector"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$ver-pgvector" >/dev/null
    else
      log "postgresql-$ver-pgvector not available from apt; continuing without pgvector"
    fi
  fi
}

password() {
  if [ ! -s "$PW_FILE" ]; then
    mkdir -p "$(dirname "$PW_FILE")"
    # A fresh random password per data dir: nothing secret lives in the repo.
    head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$PW_FILE"
    chmod 600 "$PW_FILE"
  fi
  cat "$PW_FILE"
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
    # One started by an older version of this script ran without persistence.
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendonly yes >/dev/null
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendfsync everysec >/dev/null
    log "redis already up on 127.0.0.1:$REDIS_PORT"
    return
  fi
  mkdir -p "$REDIS_DIR"
  # The persistence a deployment should use (docs/deploy.md, "Redis: persistence"): the
  # append-only file, fsynced every second. A restart then loses nothing acknowledged, a
  # machine crash at most about a second. Without it a restart brings back the last RDB
  # snapshot or nothing: the consumers detect that and rebuild users from the offline log,
  # but item rows written since are lost until their items are sent again or backfilled.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --daemonize yes \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save "" \
    --appendonly yes --appendfsync everysec
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  log "redis started on 127.0.0.1:$REDIS_PORT"
}

start_pg() {
  local bin pw
  bin=$(pg_bindir)
  pw=$(password)
  mkdir -p "$PG_SOCK"
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$DIR/pg"; chmod 755 "$DIR"; fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initdb $PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$DIR/pg/postgres.log" -w -t 60 start \
      -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
    log "postgres started on 127.0.0.1:$PG_PORT"
  else
    log "postgres already up on 127.0.0.1:$PG_PORT"
  fi
  local psql=("$bin/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
  if [ "$(as_pg "${psql[@]}" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]; then
    as_pg "${psql[@]}" -d postgres -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$pw'"
  else
    as_pg "${psql[@]}" -d postgres -c "ALTER ROLE \"$PG_USER\" PASSWORD '$pw'"
  fi
  if [ "$(as_pg "${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != 1 ]; then
    as_pg "${psql[@]}" -d postgres -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
  if [ -f "/usr/share/postgresql/$(basename "$(dirname "$bin")")/extension/vector.control" ]; then
    as_pg "${psql[@]}" -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS vector" || true
  fi
}

print_env() {
  local pw
  pw=$(password)
  cat <<EOF
export LEARNREC_FEAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export LEARNREC_FEAST_PG_HOST=127.0.0.1
export LEARNREC_FEAST_PG_PORT=$PG_PORT
export LEARNREC_FEAST_PG_DB=$PG_DB
export LEARNREC_FEAST_PG_USER=$PG_USER
export LEARNREC_FEAST_PG_PASSWORD=$pw
export LEARNREC_FEAST_PG_SSLMODE=disable
EOF
}

stop_all() {
  local bin
  bin=$(pg_bindir)
  if [ -n "$bin" ] && [ -f "$PG_DATA/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 && log "postgres stopped" || true
  fi
  if [ -f "$REDIS_DIR/redis.pid" ]; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 && log "redis stopped" || true
  fi
}

case "$ACTION" in
  start)
    install_missing
    mkdir -p "$DIR"
    start_redis
    start_pg
    print_env
    ;;
  stop) stop_all ;;
  env) print_env ;;
  *) echo "usage: $0 [start|stop|env]" >&2; exit 2 ;;
esac
