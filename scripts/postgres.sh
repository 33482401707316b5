# Start a throwaway PostgreSQL server for tests and benchmarks. Source this file, then:
#   start_postgres   # exports AUTHKIT_TEST_POSTGRES_URL and stops the server on exit
# The server lives in a temporary folder on a free loopback port and is deleted afterwards.

ensure_postgres_binaries() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    local bindir
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bindir" ]; then
        echo "PostgreSQL binaries not found: installing the postgresql Debian package" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    export PATH="$bindir:$PATH"
}

start_postgres() {
    ensure_postgres_binaries
    PG_DIR=$(mktemp -d /tmp/authkit-pg.XXXXXX)
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local run_as=()
    if [ "$(id -u)" = "0" ]; then
        # initdb refuses to run as root; a throwaway server runs as "nobody" instead.
        chown nobody "$PG_DIR"
        run_as=(runuser -u nobody --)
    fi
    "${run_as[@]}" initdb -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
    "${run_as[@]}" pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
        -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -F -c max_connections=200 -c fsync=off" start >/dev/null
    export AUTHKIT_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    export PG_DIR PG_PORT
    PG_RUN_AS="${run_as[*]}"
    export PG_RUN_AS
    trap stop_postgres EXIT
    echo "PostgreSQL running on 127.0.0.1:$PG_PORT ($PG_DIR)" >&2
}

restart_postgres() {
    $PG_RUN_AS pg_ctl -D "$PG_DIR/data" -m fast -w restart >/dev/null
}

stop_postgres() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
        $PG_RUN_AS pg_ctl -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
