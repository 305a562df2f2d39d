#!/usr/bin/env bash
#
# demo.sh: "make demo", processor end to end on a throwaway setup.
#
#   scripts/demo.sh [--no-install] [--keep]
#
# As root on a fresh Debian 12: installs the missing packages
# (scripts/install-deps.sh), builds and installs the extension and builds
# the fleet simulator (bench/loadgen); starts a temporary PostgreSQL 15
# cluster (as "postgres", 127.0.0.1, a free port, shared_preload_libraries =
# 'processor') and a redis-server (127.0.0.1, a free port); CREATE EXTENSION
# processor; runs the simulator for DEMO_SECONDS at a modest rate (both
# encodings, a few percent duplicates, out-of-order and invalid entries);
# and every second shows processor.worker_stats (rates, lag, pending), a few
# rows of processor.device_state and the row counts of the target and
# dead-letter tables.  Then it waits until everything sent has landed,
# prints the simulator's summary next to the table counts, stops both
# servers by pid and removes their directory, at the end, on Ctrl-C and on
# any failure alike.
#
# On a terminal the screen is redrawn every second; otherwise (a pipe, a
# file, a test) each refresh is printed as a snapshot below the previous one.
#
# Options:
#   --no-install   skip the packages, the build and make install: use the
#                  processor already installed (bench/loadgen is still built
#                  if it is missing).  Runs as any user that can run
#                  PostgreSQL; root runs the cluster as "postgres".
#   --keep         after the run, keep both servers up until Ctrl-C (or
#                  SIGTERM), printing how to connect; then clean up as usual.
#
# Environment: DEMO_SECONDS (default 20) how long the simulator runs,
# DEMO_DEVICES (50), DEMO_RATE (500 entries/s), DEMO_DRAIN_TIMEOUT (30 s)
# how long to wait for the last entries, PG_CONFIG (PostgreSQL 15's).
#
# Exit status 0 when every position the simulator sent is in the target
# table, every invalid entry in the dead-letter table and nothing is
# pending; 1 otherwise (in particular when nothing landed); 130 on Ctrl-C.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_SECONDS=${DEMO_SECONDS:-20}
DEMO_DEVICES=${DEMO_DEVICES:-50}
DEMO_RATE=${DEMO_RATE:-500}
DEMO_DRAIN_TIMEOUT=${DEMO_DRAIN_TIMEOUT:-30}
DUP_PCT=3
OOO_PCT=3
INVALID_PCT=2
STREAM=telemetry:t
SHOW_DEVICES=5

install=yes
keep=no
for arg in "$@"; do
	case "$arg" in
		--no-install) install=no ;;
		--keep) keep=yes ;;
		-h|--help)
			sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
			exit 0
			;;
		*)
			echo "demo.sh: unknown option \"$arg\" (--no-install, --keep, --help)" >&2
			exit 2
			;;
	esac
done

for v in DEMO_SECONDS DEMO_DEVICES DEMO_RATE DEMO_DRAIN_TIMEOUT; do
	if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
		echo "demo.sh: $v must be a positive integer, not \"${!v}\"" >&2
		exit 2
	fi
done

is_root=no
[[ "$(id -u)" -eq 0 ]] && is_root=yes
interactive=no
[[ -t 1 ]] && interactive=yes

say()
{
	printf '\n=== %s\n' "$*"
}

# --- packages, build, install ----------------------------------------------

if [[ -z "${PG_CONFIG:-}" ]]; then
	if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi

if [[ "$install" == yes ]]; then
	if [[ "$is_root" == yes ]]; then
		scripts/install-deps.sh
	else
		scripts/install-deps.sh --check
	fi
fi

bindir=$("$PG_CONFIG" --bindir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"

if [[ "$install" == yes ]]; then
	say "building processor and the simulator (bench/loadgen)"
	make -s -j2 PG_CONFIG="$PG_CONFIG" all bench/loadgen </dev/null
	if [[ -w "$pkglibdir" && -w "$extdir" ]]; then
		make -s install PG_CONFIG="$PG_CONFIG" </dev/null >/dev/null
	else
		echo "cannot write to $pkglibdir: using the processor already installed there"
	fi
elif [[ ! -x bench/loadgen ]]; then
	make -s PG_CONFIG="$PG_CONFIG" bench/loadgen </dev/null
fi
if [[ ! -f "$pkglibdir/processor.so" || ! -f "$extdir/processor.control" ]]; then
	echo "processor is not installed in $pkglibdir: run 'make install' as root" >&2
	exit 1
fi
loadgen=$(pwd)/bench/loadgen

# --- cleanup ------------------------------------------------------------------

# Under /tmp when root, whatever TMPDIR says: "postgres" must reach it.
if [[ "$is_root" == yes ]]; then
	demo=$(mktemp -d /tmp/processor-demo.XXXXXX)
else
	demo=$(mktemp -d "${TMPDIR:-/tmp}/processor-demo.XXXXXX")
fi
pg_pid=
redis_pid=
loadgen_pid=

# Stop what we started, each by its pid, and remove the directory.
cleanup()
{
	local status=$?
	trap - EXIT INT TERM
	[[ "$interactive" == yes ]] && printf '\033[?25h'	# cursor back on
	if [[ -n "$loadgen_pid" ]] && kill -0 "$loadgen_pid" 2>/dev/null; then
		kill -TERM "$loadgen_pid" 2>/dev/null || true
		wait "$loadgen_pid" 2>/dev/null || true
	fi
	if [[ $status -ne 0 && $status -ne 130 && $status -ne 143 &&
		-f "$demo/postgres.log" ]]; then
		echo "--- tail of the PostgreSQL log" >&2
		tail -n 30 "$demo/postgres.log" >&2
	fi
	if [[ -n "$pg_pid" ]] && kill -0 "$pg_pid" 2>/dev/null; then
		# fast shutdown: SIGINT to the postmaster
		kill -INT "$pg_pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$pg_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pg_pid" 2>/dev/null || true
	fi
	if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
		kill -TERM "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	rm -rf "$demo"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- servers ------------------------------------------------------------------

# Run a command as the user PostgreSQL runs as.
as_pg()
{
	if [[ "$is_root" == yes ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port()
{
	perl -MIO::Socket::INET -e '
		my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
			LocalPort => 0, ReuseAddr => 1) or die "bind: $!\n";
		print $s->sockport, "\n";'
}

pg_port=$(free_port)
redis_port=$(free_port)
while [[ "$redis_port" == "$pg_port" ]]; do
	redis_port=$(free_port)
done

say "starting redis-server on 127.0.0.1:$redis_port"
mkdir "$demo/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' \
	--appendonly no --daemonize no --dir "$demo/redis" \
	--logfile "$demo/redis/redis.log" </dev/null &
redis_pid=$!

redis()
{
	redis-cli -h 127.0.0.1 -p "$redis_port" "$@" </dev/null
}

for _ in $(seq 100); do
	[[ "$(redis PING 2>/dev/null)" == PONG ]] && break
	sleep 0.1
done
[[ "$(redis PING)" == PONG ]]

say "starting PostgreSQL on 127.0.0.1:$pg_port ($demo/data)"
[[ "$is_root" == yes ]] && chown postgres: "$demo"
as_pg "$bindir/initdb" -D "$demo/data" -U postgres -E UTF8 --locale=C -N \
	-A trust >"$demo/initdb.log" 2>&1 ||
	{ cat "$demo/initdb.log" >&2; exit 1; }
cat >>"$demo/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$demo'
shared_preload_libraries = 'processor'
processor.redis_host = '127.0.0.1'
processor.redis_port = $redis_port
processor.block_time = '100ms'
EOF
as_pg "$bindir/pg_ctl" -D "$demo/data" -l "$demo/postgres.log" -w start \
	>/dev/null
pg_pid=$(head -n 1 "$demo/data/postmaster.pid")

sql()
{
	PGTZ=UTC "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 \
		-p "$pg_port" -U postgres -d postgres "$@" </dev/null
}

say "CREATE EXTENSION processor"
sql -c 'CREATE EXTENSION processor'

# The worker checks for the extension at least once a second; wait until
# it consumes, so that the first screens are not all "connecting".
for _ in $(seq 100); do
	[[ "$(sql -At -c 'SELECT status FROM processor.stats() WHERE worker = 1')" == running ]] &&
		break
	sleep 0.1
done

# --- simulator -----------------------------------------------------------------

# Simulated time runs at the speed of the clock: each device reports every
# devices/rate seconds, from now on.
count=$((DEMO_RATE * DEMO_SECONDS))
interval_ms=$((DEMO_DEVICES * 1000 / DEMO_RATE))
((interval_ms < 2)) && interval_ms=2
loadgen_args=(--quiet --host 127.0.0.1 --port "$redis_port" --stream "$STREAM"
	--devices "$DEMO_DEVICES" --rate "$DEMO_RATE" --count "$count"
	--encoding mixed --dup "$DUP_PCT" --ooo "$OOO_PCT" --invalid "$INVALID_PCT"
	--start-ts now --interval "$interval_ms" --seed "$$")
say "bench/loadgen ${loadgen_args[*]}"
"$loadgen" "${loadgen_args[@]}" >"$demo/loadgen.out" 2>"$demo/loadgen.err" &
loadgen_pid=$!

# --- the screen ------------------------------------------------------------------

title="processor demo: $DEMO_DEVICES devices, $DEMO_RATE entries/s for ${DEMO_SECONDS}s (JSON and flat; $DUP_PCT % duplicates, $OOO_PCT % out of order, $INVALID_PCT % invalid)"

# One psql session draws the whole screen (under load a connection costs
# more than the queries).  Its first line is not shown: "state <entries_read>
# <inserted> <epoch> <positions> <dead letters>", kept for the rates of the
# next screen; "-" for a table that the worker has not created yet.
screen_sql=$(cat <<EOF
SELECT coalesce(sum(entries_read), 0) AS nread,
       coalesce(sum(inserted), 0) AS ninserted,
       extract(epoch FROM clock_timestamp()) AS now,
       to_regclass('public.positions') IS NOT NULL AND
       to_regclass('public.positions_dead_letter') IS NOT NULL AS have_tables,
       (SELECT devices FROM processor.state_info()) AS ndevices
FROM processor.stats() \gset
\if :have_tables
SELECT count(*) AS nrows FROM public.positions \gset
SELECT count(*) AS ndead FROM public.positions_dead_letter \gset
\else
\set nrows -
\set ndead -
\endif
\echo state :nread :ninserted :now :nrows :ndead
\echo processor.worker_stats
SELECT worker, status, redis_connected AS redis,
       round((entries_read - :prev_read) / (:now - :prev_t)) AS "read/s",
       round((inserted - :prev_inserted) / (:now - :prev_t)) AS "inserted/s",
       entries_read, inserted, duplicates, dead_lettered, batches,
       lag, pending, group_pending, coalesce(last_error, '') AS last_error
FROM processor.worker_stats ORDER BY worker;
\echo processor.device_state ($SHOW_DEVICES of :ndevices devices)
SELECT device_id, to_char(ts, 'YYYY-MM-DD HH24:MI:SS.MS') AS ts,
       round(lat::numeric, 5) AS lat, round(lon::numeric, 5) AS lon,
       round(speed::numeric, 1) AS speed, round(heading::numeric) AS heading,
       satellites, positions_seen
FROM processor.device_state ORDER BY device_id LIMIT $SHOW_DEVICES;
EOF
)
prev_read=0
prev_inserted=0
prev_t=${EPOCHREALTIME/,/.}
rows=
dead=

pending()
{
	redis XPENDING "$STREAM" processor 2>/dev/null | head -n 1 || true
}

# Print one screen: processor.worker_stats with rates since the previous
# screen, a few devices, the table counts and the stream's pending count.
# Sets $rows and $dead (empty while a table does not exist).  $1 is the
# status line.
show()
{
	local line=$1 out state screen

	out=$(PGTZ=UTC "$bindir/psql" -X -q -P footer=off -h 127.0.0.1 \
		-p "$pg_port" -U postgres -d postgres -v prev_read="$prev_read" \
		-v prev_inserted="$prev_inserted" -v prev_t="$prev_t" \
		<<<"$screen_sql" 2>&1) || true
	state=$(sed -n '/^state /{p;q}' <<<"$out")
	screen=$(sed '/^state /d' <<<"$out")
	if [[ -n "$state" ]]; then
		read -r _ prev_read prev_inserted prev_t rows dead <<<"$state"
		[[ "$rows" == - ]] && rows=
		[[ "$dead" == - ]] && dead=
	fi
	screen+=$'\n\n'"public.positions: ${rows:-(not created yet)} rows    public.positions_dead_letter: ${dead:-(not created yet)} rows    stream pending: $(pending)"
	if [[ "$interactive" == yes ]]; then
		printf '\033[H\033[2J%s\n%s\n\n%s\n' "$title" "$line" "$screen"
	else
		printf '\n--- %s\n%s\n' "$line" "$screen"
	fi
}

# Sleep until $1 seconds after $2 (both with fractions).
sleep_until()
{
	local delay
	delay=$(awk -v t="${EPOCHREALTIME/,/.}" -v s="$2" -v n="$1" \
		'BEGIN { d = s + n - t; printf("%.3f\n", (d > 0) ? d : 0) }')
	sleep "$delay"
}

if [[ "$interactive" == yes ]]; then
	printf '\033[?25l'			# cursor off while redrawing
else
	say "$title"
fi
started=$SECONDS
started_rt=${EPOCHREALTIME/,/.}
tick=0
while kill -0 "$loadgen_pid" 2>/dev/null; do
	tick=$((tick + 1))
	sleep_until "$tick" "$started_rt"	# a screen a second, however long one takes
	show "$((SECONDS - started)) s of $DEMO_SECONDS, simulator running; Ctrl-C stops and cleans up"
	if ((SECONDS - started > DEMO_SECONDS + 30)); then
		echo "the simulator did not finish in time" >&2
		exit 1
	fi
done
loadgen_status=0
wait "$loadgen_pid" || loadgen_status=$?
loadgen_pid=
summary=$(cat "$demo/loadgen.out")
if [[ $loadgen_status -ne 0 || -z "$summary" ]]; then
	echo "bench/loadgen failed (exit status $loadgen_status): $summary" >&2
	cat "$demo/loadgen.err" >&2
	exit 1
fi

# --- drain and check ---------------------------------------------------------------

# The simulator's summary: rows = positions that land in the target table
# (normal + out of order; duplicates are stored once), invalid = dead letters.
expect_rows=$(sed -n 's/.*\<rows=\([0-9]*\).*/\1/p' <<<"$summary")
expect_dead=$(sed -n 's/.*\<invalid=\([0-9]*\).*/\1/p' <<<"$summary")
sent=$(sed -n 's/.*\<sent=\([0-9]*\).*/\1/p' <<<"$summary")
duplicates=$(sed -n 's/.*\<duplicate=\([0-9]*\).*/\1/p' <<<"$summary")

deadline=$((SECONDS + DEMO_DRAIN_TIMEOUT))
landed=no
while true; do
	tick=$((tick + 1))
	sleep_until "$tick" "$started_rt"
	show "$((SECONDS - started)) s: simulator finished, sent $sent entries"
	if [[ "$rows" == "$expect_rows" && "$dead" == "$expect_dead" &&
		"$(pending)" == 0 ]]; then
		landed=yes
		break
	fi
	((SECONDS < deadline)) || break
done

echo
echo "simulator: sent $sent entries: $expect_rows positions, $duplicates duplicates, $expect_dead invalid"
echo "stored:    ${rows:-0} positions in public.positions, ${dead:-0} dead letters in public.positions_dead_letter, $(pending) pending"

if [[ "$landed" != yes ]]; then
	if [[ "${rows:-0}" == 0 ]]; then
		echo "FAILED: no position landed within $DEMO_DRAIN_TIMEOUT s" >&2
	else
		echo "FAILED: expected $expect_rows positions, $expect_dead dead letters and nothing pending within $DEMO_DRAIN_TIMEOUT s" >&2
	fi
	exit 1
fi
echo "demo finished: every position stored once, every invalid entry dead-lettered, nothing pending"

if [[ "$keep" == yes ]]; then
	say "servers kept running until Ctrl-C"
	echo "  psql -h 127.0.0.1 -p $pg_port -U postgres postgres"
	echo "  redis-cli -h 127.0.0.1 -p $redis_port"
	echo "  bench/loadgen --port $redis_port --rate 100 --count 0 --start-ts now   # more positions"
	while true; do
		sleep 1 &
		wait $! || true
	done
fi
