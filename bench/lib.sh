# Sourced by the benchmark scripts: the checks and the build they all start with.

# GNU time, not the shell keyword: only it reports peak RSS (%M, in KB).
require_gnu_time() {
  if ! /usr/bin/time -f "%e %M" true >/dev/null 2>&1; then
    echo "GNU time is missing: install it with 'apt-get install -y time'" >&2
    exit 1
  fi
}

# Builds the release binary in the shared build directory and sets BIN to it.
build_release() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenant-reconcile/target}"
  echo "building release binary in $CARGO_TARGET_DIR ..." >&2
  cargo build --release --quiet
  BIN="$CARGO_TARGET_DIR/release/tenant-reconcile"
}

# logged_count LOG FIELD: the last value of a count the debug log gives as a field of a line
# (`debug: applied (…, s3 requests: 5727, …)`: the text log writes a field's `_` as a space),
# or `?` when no line has it.
logged_count() {
  local field="${2//_/[_ ]}"
  { grep -oE "$field[=:] ?[0-9]+" "$1" || true; } | tail -1 | grep -oE '[0-9]+$' || echo "?"
}

# refresh_queries LOG PROVIDER: the round trips sent by the refresh of the providers whose
# name starts with PROVIDER, summed from the debug log's lines
# (`debug: refreshed (provider: postgres data, elapsed: 3ms, queries: 5)`); 0 when none.
# A log with no refresh line at all fails: the debug log was not on, and a count of 0 would
# pass every comparison made with it.
refresh_queries() {
  local n
  grep -q "refreshed (provider: " "$1" || { echo "no refresh lines in $1: is TENANT_RECONCILE_LOG=tenant_reconcile=debug set?" >&2; exit 1; }
  n=$({ grep -o "provider: $2[^,]*, elapsed: [^,]*, queries: [0-9]*" "$1" || true; } | grep -o '[0-9]*$' | paste -sd+ | bc)
  echo "${n:-0}"
}

# commit_all DIR MESSAGE: DIR made a git repository with everything in it committed (a
# generated tenant repo, as CI would check it out). No automatic gc: packing the loose
# objects of a large fleet in the background would pull them from under a copy made next.
commit_all() {
  git -C "$1" init -q
  git -C "$1" add -A
  git -C "$1" -c gc.auto=0 -c user.name=bench -c user.email=bench@example.invalid \
    -c commit.gpgsign=false commit -qm "$2"
}

# find_pg_bin: PGBIN set to the folder of the server's programs (initdb, pg_ctl), and AS to
# the command that runs them as `postgres` when this runs as root, whom initdb refuses.
find_pg_bin() {
  PGBIN=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$PGBIN/initdb" ] || PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$PGBIN/initdb" ] || { echo "initdb is missing: install the PostgreSQL server" >&2; exit 1; }
  AS=()
  if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi
  SERVERS=()
}

# own_server DIR [SETTING...]: a PostgreSQL server of this run's own in DIR (trust auth,
# loopback), started with each SETTING (`name=value`) besides; its port in PORT. Not printed:
# in a subshell its folder would not reach SERVERS, and stop_own_servers would not stop it.
own_server() {
  local dir=$1 port setting extra=""
  shift
  for setting in "$@"; do extra+=" -c $setting"; done
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  [ ${#AS[@]} -eq 0 ] || chown postgres "$dir"
  "${AS[@]}" "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c wal_level=logical$extra" start >/dev/null
  SERVERS+=("$dir")
  PORT=$port
}

# stop_own_servers: every server own_server started, stopped.
stop_own_servers() {
  for dir in "${SERVERS[@]}"; do
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  done
}

# drop_like URL DATABASE_PATTERNS ROLE_PATTERN: the databases and roles of the server at URL
# whose names are LIKE the patterns (what a run named after its process; several database
# patterns separated by spaces), dropped; the databases first, since a role holding rights
# on one cannot go.
drop_like() {
  local url=$1 databases=$2 roles=$3 db pattern where=""
  for pattern in $databases; do
    where="${where:+$where or }datname like '$pattern'"
  done
  for db in $(psql "$url/postgres" -qAtc "select datname from pg_database where $where"); do
    psql "$url/postgres" -qc "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null
  done
  psql "$url/postgres" -qc "DO \$\$ DECLARE r text; BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '$roles' LOOP
      EXECUTE format('DROP ROLE %I', r);
    END LOOP; END \$\$" >/dev/null
}

# postgres_config DIR [PREFIX]: DIR's tenant-reconcile.hcl written to keep the state, the control
# plane and the data on the Postgres of DATABASE_URL, the tenants' roles, schemas and databases
# named PREFIX… (a run's own names, for drop_like to find) when PREFIX is given.
postgres_config() {
  local dir=$1 prefix=${2:-}
  {
    printf 'state {\n  backend = "postgres"\n}\ntargets {\n  control_plane = "postgres"\n  data          = "postgres"\n}\n'
    if [ -n "$prefix" ]; then
      printf 'postgres {\n  role_prefix     = "%s"\n  schema_prefix   = "%s"\n  database_prefix = "%s"\n}\n' \
        "$prefix" "$prefix" "$prefix"
    fi
  } >"$dir/tenant-reconcile.hcl"
}

# quiet URL: the server at URL made ready for a timed run, so that no run pays for the one before
# it: the shared catalogs' dead rows (every run makes and drops thousands of roles) vacuumed, the
# autovacuum of what the last run wrote let finish (up to a minute), and a checkpoint written.
# A script timed right after an apply of 1,000 tenants took up to 1.8 times its usual time.
quiet() {
  psql "$1/postgres" -qc "VACUUM pg_authid, pg_auth_members, pg_shdepend, pg_shdescription, pg_database" >/dev/null
  local waited=0
  while [ "$waited" -lt 60 ] && [ "$(psql "$1/postgres" -qAtc \
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" != 0 ]; do
    sleep 1
    waited=$((waited + 1))
  done
  psql "$1/postgres" -qc "CHECKPOINT" >/dev/null
}

# busy: the CPU time all CPUs have spent on anything but waiting, in seconds (from
# /proc/stat: the server's work and this machine's other processes' too).
busy() { awk '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat; }

# middle VALUES: the median of VALUES, one number per line, each line ending with a newline
# (as `values+="$v"$'\n'` builds them). Given to sort as they are: a here-string would add
# a newline, whose empty line sorts first and makes the middle one a lower value.
middle() {
  local n
  n=$(printf '%s' "$1" | wc -l)
  printf '%s' "$1" | sort -n | sed -n "$(( (n + 1) / 2 ))p"
}

# git_ ARGS...: git as the benchmarks' own committer, whatever this machine's git config says.
git_() { git -c user.name=bench -c user.email=bench@example.com -c init.defaultBranch=main -c commit.gpgsign=false "$@"; }

# run_median COUNT ARGS...: runs $BIN with ARGS COUNT times (its output in $TMP/out and
# $TMP/err) and prints "secs MB", the medians of wall time and peak memory. Exit code 1
# (an error; 2 is "changes present") stops the benchmark with the error shown.
run_median() {
  local count=$1; shift
  local times="" mems=""
  for _ in $(seq "$count"); do
    set +e
    /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    local code=$?
    set -e
    if [ "$code" -eq 1 ]; then echo "FAILED: tenant-reconcile $*" >&2; tail -n 20 "$TMP/err" >&2; exit 1; fi
    read -r secs kb <"$TMP/t"
    times+="$secs"$'\n' mems+="$kb"$'\n'
  done
  echo "$(middle "$times") $(( $(middle "$mems") / 1024 ))"
}

# run_once ARGS...: runs $BIN with ARGS once, which must succeed, and prints "secs MB".
run_once() {
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" ||
    { echo "FAILED: tenant-reconcile $*" >&2; tail -n 20 "$TMP/err" >&2; exit 1; }
  read -r secs kb <"$TMP/t"
  echo "$secs $((kb / 1024))"
}
