#!/usr/bin/env bash
# Throwaway PostgreSQL for tests and development: its own cluster in a scratch directory, loopback only,
# role/database qixin (password qixin). Nothing here is meant to survive `stop`. See infra/README.md.
#
#   pg.sh install    install the Debian PostgreSQL server package if no server binaries exist
#   pg.sh start      initdb on first use, start, wait until ready, print the SQLAlchemy URL
#   pg.sh stop       fast shutdown, then delete the scratch directory (data included)
#   pg.sh status     running or not (exit 0 / 3)
#   pg.sh url        print postgresql+psycopg://qixin:qixin@127.0.0.1:PORT/qixin
#   pg.sh psql ...   psql as qixin on that database
#
# Environment: PGPORT (55432), QIXIN_PG_DIR (/tmp/qixin-pg-$PGPORT), PG_START_TIMEOUT (60).
# Progress goes to stderr; `start` and `url` print only the URL on stdout.
set -euo pipefail

PORT="${PGPORT:-55432}"
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "pg: PGPORT must be a number (got '$PORT')" >&2; exit 1; }
DIR="${QIXIN_PG_DIR:-/tmp/qixin-pg-$PORT}"
DATA="$DIR/data"
SOCK="$DIR/sock"
LOG="$DIR/postgres.log"
MARKER="$DIR/.qixin-pg"
START_TIMEOUT="${PG_START_TIMEOUT:-60}"
DB_USER=qixin
DB_PASSWORD=qixin
DB_NAME=qixin
URL="postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"

say() { echo "pg: $*" >&2; }
die() { echo "pg: error: $*" >&2; exit 1; }

server_bin() { # newest installed server's bin dir
  local p
  p="$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | grep -v '\*' | sort -V | tail -n1 || true)"
  [[ -n "$p" ]] && dirname "$p"
}

cmd_install() {
  if [[ -n "$(server_bin)" ]]; then
    [[ "${1:-}" == quiet ]] || say "PostgreSQL server already installed ($(server_bin))"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "no PostgreSQL server binaries; run as root or: sudo apt-get install -y postgresql"
  command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries and no apt-get; install PostgreSQL 14+"
  say "no PostgreSQL server found: running apt-get update && apt-get install -y postgresql"
  apt-get update -qq >&2
  # Debian's postinst may create and start a default 'main' cluster on 5432; we never use it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  [[ -n "$(server_bin)" ]] || die "apt-get finished but no /usr/lib/postgresql/*/bin/postgres exists"
  say "installed $(server_bin)"
}

# PostgreSQL refuses to run as root: as root, everything runs as the postgres system user (created by
# the package); as anyone else, as that user. The cwd is moved to a directory that user can read.
if [[ $EUID -eq 0 ]]; then SUPERUSER=postgres; else SUPERUSER="$(id -un)"; fi
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd "$DIR" && runuser -u postgres -- "$@")
  else
    (cd "$DIR" && "$@")
  fi
}

running() {
  [[ -f "$DATA/PG_VERSION" ]] || return 1
  local bin
  bin="$(server_bin)" || return 1
  as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

init_cluster() {
  local bin=$1
  say "creating throwaway cluster in $DATA (port $PORT)"
  as_pg "$bin/initdb" -D "$DATA" -U "$SUPERUSER" --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  # No trust anywhere: the socket uses peer (only the cluster owner gets in as superuser), TCP needs
  # a password. fsync/synchronous_commit/full_page_writes are off because this cluster is thrown away
  # on stop; a crash may lose or corrupt it, which is fine for tests and never fine for real data.
  as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- infra/postgres/pg.sh (throwaway test cluster) ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
log_min_messages = warning
EOF
}

create_role_and_db() {
  local bin=$1
  as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U "$SUPERUSER" -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME') \\gexec
SQL
}

cmd_start() {
  cmd_install quiet
  local bin
  bin="$(server_bin)"
  if running; then
    say "already running on 127.0.0.1:$PORT (data $DATA); nothing to do"
    echo "$URL"
    return 0
  fi
  port_open "$PORT" && die "port $PORT is already in use by another process; set PGPORT"
  if [[ -e "$DIR" && ! -e "$MARKER" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    die "$DIR exists and was not created by pg.sh; refusing to use it (set QIXIN_PG_DIR)"
  fi
  mkdir -p "$DIR" "$SOCK"
  touch "$MARKER"
  if [[ $EUID -eq 0 ]]; then
    chown postgres:postgres "$DIR" "$SOCK" "$MARKER"
    runuser -u postgres -- test -w "$DIR" || die "the postgres user cannot write $DIR (choose QIXIN_PG_DIR under /tmp)"
  fi
  chmod 700 "$DIR"
  [[ ${#SOCK} -lt 100 ]] || die "socket dir path too long for a unix socket: $SOCK"
  [[ -f "$DATA/PG_VERSION" ]] || init_cluster "$bin"
  local t0=$SECONDS
  as_pg "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT" start >/dev/null ||
    { tail -n 20 "$LOG" >&2; die "PostgreSQL did not start (log: $LOG)"; }
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT"; do
    ((SECONDS < deadline)) || { tail -n 20 "$LOG" >&2; die "not ready after ${START_TIMEOUT}s"; }
    sleep 0.2
  done
  create_role_and_db "$bin"
  say "ready in $((SECONDS - t0)) s: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data $DATA"
  echo "$URL"
}

cmd_stop() {
  local bin
  bin="$(server_bin || true)"
  if [[ -n "$bin" ]] && running; then
    as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null
    say "stopped PostgreSQL on 127.0.0.1:$PORT"
  else
    say "not running on port $PORT"
  fi
  if [[ -d "$DIR" ]]; then
    if [[ -e "$MARKER" ]]; then
      rm -rf "$DIR"
      say "deleted $DIR"
    else
      say "$DIR was not created by pg.sh; left alone"
    fi
  fi
}

cmd_status() {
  if running; then
    echo "running: PostgreSQL on 127.0.0.1:$PORT, pid $(head -n1 "$DATA/postmaster.pid"), data $DATA"
    echo "url: $URL"
    return 0
  fi
  echo "not running (port $PORT, dir $DIR)"
  return 3
}

cmd_psql() {
  local bin
  bin="$(server_bin)" || die "PostgreSQL is not installed"
  PGPASSWORD="$DB_PASSWORD" exec "$bin/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d "$DB_NAME" "$@"
}

case "${1:-help}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) echo "$URL" ;;
  psql) shift; cmd_psql "$@" ;;
  help | -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
