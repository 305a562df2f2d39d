#!/usr/bin/env bash
#
# bench.sh: "make bench", the throughput benchmark of SPEC §8.
#
# As root on Debian 12 (like "make test"): installs the missing packages
# (scripts/install-deps.sh), builds the extension and the load generator
# (bench/loadgen), installs the extension into a private copy of
# PostgreSQL 15's installation (see below), then starts a throwaway cluster
# (as "postgres", default postgresql.conf plus the processor settings
# below, synchronous_commit on) and a redis-server, both on free loopback
# ports, and measures, on the same data, RUNS times each:
#
#   drain     N entries (JSON with a realistic attributes object, DEVICES
#             devices) pre-loaded into the stream while the worker is paused
#             (processor.enabled = off); then processor.enabled = on and the
#             time until every entry is read, committed and acknowledged
#             (the group's lag and pending are 0, count(*) = N).  From the
#             reload to the worker's last commit (worker_stats.last_batch_at).
#   ceiling   the rows the worker inserted, inserted again into the empty
#             target by one connection: INSERT INTO public.positions SELECT *
#             FROM unnest(<one array per column>) ON CONFLICT (device_id, ts)
#             DO NOTHING, 1000 rows per committed transaction, from a
#             procedure that loops over arrays built beforehand (held in a
#             PL/pgSQL variable: the loop only inserts and commits).
#   CPU       the worker's user+sys CPU time (/proc/<pid>/stat) during the
#             drain, per entry; also its minor page faults per entry, and
#             how long it was on a CPU and waiting for one
#             (/proc/<pid>/schedstat: much waiting = a busy machine).
#   latency   RATE entries/s for LATENCY_SECONDS s, each stamped with its
#             send time (loadgen --stamp, attribute sent_us): p50/p99/max of
#             received_at - sent_us over every row, in SQL.  received_at is
#             now() of the batch's transaction, i.e. the time its insert
#             began.  Also to the commit: pg_xact_commit_timestamp(xmin) -
#             sent_us, with track_commit_timestamp = on for these runs only
#             (a restart).  And the worker's CPU per entry and the mean
#             batch size at that load.
#   2 workers processor.workers = MORE_WORKERS (a restart): drain again.
#
# and prints each figure as the median of the runs with min - max, the ratio
# drain / ceiling, and the targets of issue 5.  Between runs the worker is
# paused, the tables truncated, the stream and its group re-created, and a
# CHECKPOINT taken, so every run starts alike.  Everything (servers, perf,
# the directory) is stopped by pid and removed on exit, success or not.
#
# Options (flags, or the environment variables in brackets):
#   -n N            entries per drain (BENCH_N, default 200000)
#   -d DEVICES      devices (BENCH_DEVICES, default 10000)
#   -b SIZE         processor.batch_size (BENCH_BATCH, default 1000)
#   -w WORKERS      processor.workers for drain, CPU and latency
#                   (BENCH_WORKERS, default 1)
#   -W WORKERS      processor.workers for the extra drain, 0 = skip it
#                   (BENCH_MORE_WORKERS, default 2)
#   -e ENCODING     json, flat or mixed (BENCH_ENCODING, default json)
#   -r RUNS         runs of each figure (BENCH_RUNS, default 3)
#   --rate R        offered load of the latency runs, entries/s
#                   (BENCH_RATE, default 5000)
#   --seconds S     length of a latency run (BENCH_LATENCY_SECONDS, 10)
#   --perf          one more drain under "perf record -g" and its top
#                   symbols (BENCH_PERF=1; installs linux-perf when root)
#   --keep          keep the directory (logs, perf.data) (BENCH_KEEP=1)
# e.g. "make bench BENCH_N=50000 BENCH_RUNS=5" or "bash bench/bench.sh -n 50000".
#
# As another user: nothing is installed with apt-get, and both servers run
# as that user.  A default run takes two to four minutes.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${BENCH_N:-200000}
DEVICES=${BENCH_DEVICES:-10000}
BATCH=${BENCH_BATCH:-1000}
WORKERS=${BENCH_WORKERS:-1}
MORE_WORKERS=${BENCH_MORE_WORKERS:-2}
ENCODING=${BENCH_ENCODING:-json}
RUNS=${BENCH_RUNS:-3}
RATE=${BENCH_RATE:-5000}
LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-10}
PERF=${BENCH_PERF:-0}
KEEP=${BENCH_KEEP:-0}

STREAM=telemetry:t
GROUP=processor
CEILING_CHUNK=1000				# rows per transaction of the ceiling (issue 5)
WAIT_TIMEOUT=${BENCH_WAIT_TIMEOUT:-300}	# seconds, for any one wait

usage()
{
	sed -n '/^# Options/,/^# As another user/p' "${BASH_SOURCE[0]}" |
		sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
	case "$1" in
		-n) N=${2:?-n needs a value}; shift 2 ;;
		-d) DEVICES=${2:?-d needs a value}; shift 2 ;;
		-b) BATCH=${2:?-b needs a value}; shift 2 ;;
		-w) WORKERS=${2:?-w needs a value}; shift 2 ;;
		-W) MORE_WORKERS=${2:?-W needs a value}; shift 2 ;;
		-e) ENCODING=${2:?-e needs a value}; shift 2 ;;
		-r) RUNS=${2:?-r needs a value}; shift 2 ;;
		--rate) RATE=${2:?--rate needs a value}; shift 2 ;;
		--seconds) LATENCY_SECONDS=${2:?--seconds needs a value}; shift 2 ;;
		--perf) PERF=1; shift ;;
		--keep) KEEP=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) echo "bench.sh: unknown option \"$1\"" >&2; usage >&2; exit 2 ;;
	esac
done

for v in N DEVICES BATCH WORKERS MORE_WORKERS RUNS RATE LATENCY_SECONDS; do
	if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
		echo "bench.sh: $v must be a non-negative integer, not \"${!v}\"" >&2
		exit 2
	fi
done
for v in N DEVICES BATCH WORKERS RUNS RATE LATENCY_SECONDS; do
	if [[ "${!v}" -lt 1 ]]; then
		echo "bench.sh: $v must be at least 1" >&2
		exit 2
	fi
done
case "$ENCODING" in
	json | flat | mixed) ;;
	*) echo "bench.sh: the encoding must be json, flat or mixed" >&2; exit 2 ;;
esac

is_root=no
[[ "$(id -u)" -eq 0 ]] && is_root=yes

say()
{
	printf '\n=== %s\n' "$*"
}

fail()
{
	echo "bench.sh: $*" >&2
	exit 1
}

# --- packages, build, install ------------------------------------------------

if [[ "$is_root" == yes ]]; then
	scripts/install-deps.sh
	if [[ "$PERF" == 1 ]] && ! command -v perf >/dev/null 2>&1; then
		echo "bench.sh: installing linux-perf for --perf"
		DEBIAN_FRONTEND=noninteractive apt-get -qq install -y \
			--no-install-recommends linux-perf </dev/null >/dev/null
	fi
else
	scripts/install-deps.sh --check
fi
if [[ "$PERF" == 1 ]] && ! command -v perf >/dev/null 2>&1; then
	fail "--perf needs perf (Debian package linux-perf)"
fi

if [[ -z "${PG_CONFIG:-}" ]]; then
	if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
sys_bindir=$("$PG_CONFIG" --bindir)
sys_pkglibdir=$("$PG_CONFIG" --pkglibdir)
sys_sharedir=$("$PG_CONFIG" --sharedir)

say "building processor and bench/loadgen"
make -s -j2 PG_CONFIG="$PG_CONFIG" </dev/null
make -s PG_CONFIG="$PG_CONFIG" bench/loadgen </dev/null
loadgen=$(pwd)/bench/loadgen

# --- a private installation ------------------------------------------------------

# PostgreSQL's installation (bin, lib, share: it finds them relative to
# its binaries) copied under $dir/root, and this build installed into the
# copy with make install DESTDIR.  So the servers load exactly what was
# built here, whatever another "make install" puts into the system's
# directories meanwhile, and the system's installation is left alone.
dir=$(mktemp -d /tmp/processor-bench.XXXXXX)
pg_pid=
redis_pid=
perf_pid=

# Run a command as the user PostgreSQL runs as.
as_pg()
{
	if [[ "$is_root" == yes ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

stop_postgres()
{
	if [[ -n "$pg_pid" ]] && kill -0 "$pg_pid" 2>/dev/null; then
		kill -INT "$pg_pid" 2>/dev/null || true		# fast shutdown
		for _ in $(seq 300); do
			kill -0 "$pg_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pg_pid" 2>/dev/null || true
	fi
	pg_pid=
}

cleanup()
{
	local status=$?
	trap - EXIT INT TERM
	if [[ -n "$perf_pid" ]] && kill -0 "$perf_pid" 2>/dev/null; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
	fi
	if [[ $status -ne 0 && -f "$dir/postgres.log" ]]; then
		echo "--- tail of the PostgreSQL log" >&2
		tail -n 30 "$dir/postgres.log" >&2
	fi
	stop_postgres
	if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
		kill -TERM "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	if [[ "$KEEP" == 1 ]]; then
		echo "bench.sh: kept $dir"
	else
		rm -rf "$dir"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

root=$dir/root
mkdir "$root"
# (from /: cp --parents with absolute names fails on the parents' modes)
(cd / && cp -a --parents "${sys_bindir#/}" "${sys_pkglibdir#/}" \
	"${sys_sharedir#/}" "$root")
make -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$root" </dev/null >/dev/null
bindir=$root$sys_bindir
pkglibdir=$root$sys_pkglibdir

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

mkdir "$dir/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' \
	--appendonly no --daemonize no --dir "$dir/redis" \
	--logfile "$dir/redis/redis.log" </dev/null &
redis_pid=$!

redis()
{
	redis-cli -h 127.0.0.1 -p "$redis_port" "$@" </dev/null
}

for _ in $(seq 100); do
	[[ "$(redis PING 2>/dev/null)" == PONG ]] && break
	sleep 0.1
done
[[ "$(redis PING)" == PONG ]] || fail "redis-server did not start"

[[ "$is_root" == yes ]] && chown postgres: "$dir"
as_pg "$bindir/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
	-A trust >"$dir/initdb.log" 2>&1 ||
	{ cat "$dir/initdb.log" >&2; exit 1; }
# Only what the benchmark needs; everything else is initdb's default
# (synchronous_commit = on, shared_buffers = 128MB, max_wal_size = 1GB, ...).
cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir'
shared_preload_libraries = 'processor'
processor.redis_host = '127.0.0.1'
processor.redis_port = $redis_port
processor.enabled = off
processor.batch_size = $BATCH
processor.workers = $WORKERS
EOF

start_postgres()
{
	as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
		start >/dev/null
	pg_pid=$(head -n 1 "$dir/data/postmaster.pid")
}

sql()
{
	"$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p "$pg_port" \
		-U postgres -d postgres "$@" </dev/null
}

start_postgres
sql -c 'CREATE EXTENSION processor'

# --- helpers -------------------------------------------------------------------

now()
{
	date +%s.%N
}

# Poll "$@" (a command printing t or f) every 0.1 s until it prints t.
wait_for()
{
	local what=$1
	shift
	local deadline=$((SECONDS + WAIT_TIMEOUT))
	while [[ "$("$@" 2>/dev/null || true)" != t ]]; do
		if ((SECONDS > deadline)); then
			sql -x -c 'SELECT * FROM processor.worker_stats' >&2 || true
			fail "timed out after $WAIT_TIMEOUT s waiting for $what"
		fi
		sleep 0.1
	done
}

workers_in()
{
	sql -c "SELECT count(*) = $1 AND bool_and(status = '$2' AND pid IS NOT NULL)
		FROM processor.worker_stats"
}

# processor.enabled on|off through ALTER SYSTEM and a reload; waits until
# every worker says so.
set_enabled()
{
	local status=paused
	[[ "$1" == on ]] && status=running
	sql -c "ALTER SYSTEM SET processor.enabled = $1" -c 'SELECT pg_reload_conf()' \
		>/dev/null
	wait_for "the workers to be $status" workers_in "$nworkers" "$status"
}

# The group's "pending lag entries-read" (XINFO GROUPS).
group_info()
{
	redis XINFO GROUPS "$STREAM" | awk -v g="$GROUP" '
		NR % 2 == 1 { k = $0; next }
		k == "name" { cur = $0 }
		cur == g { v[k] = $0 }
		END { print v["pending"] " " v["lag"] " " v["entries-read"] }'
}

# Every one of $1 entries read and acknowledged?
drained()
{
	local info
	info=$(group_info)
	[[ "$info" == "0 0 $1" ]] && echo t || echo f
}

# An empty target, dead-letter table and stream, and a fresh group; the
# workers must be paused.
reset_data()
{
	sql -c 'TRUNCATE public.positions, public.positions_dead_letter'
	redis DEL "$STREAM" >/dev/null
	redis XGROUP CREATE "$STREAM" "$GROUP" 0 MKSTREAM >/dev/null
	sql -c 'CHECKPOINT'
}

worker_pids()
{
	sql -c "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
		WHERE backend_type = 'processor'"
}

# "cpu faults run wait" of the given processes, summed: user+sys CPU
# seconds and minor page faults (/proc/<pid>/stat fields 14+15 and 10,
# counted after the command name, which may hold spaces), and seconds on a
# CPU and waiting for one (/proc/<pid>/schedstat, ns).
proc_sample()
{
	local pid
	for pid in "$@"; do
		echo "$(sed 's/^.*) //' "/proc/$pid/stat") $(cat "/proc/$pid/schedstat")"
	done | awk -v hz="$(getconf CLK_TCK)" '
		{ ticks += $12 + $13; faults += $8; run += $(NF - 2); wait += $(NF - 1) }
		END { printf "%.3f %d %.3f %.3f", ticks / hz, faults, run / 1e9, wait / 1e9 }'
}

# Run the load generator; checks that it sent everything without an error.
run_loadgen()
{
	local out
	out=$("$loadgen" -q -p "$redis_port" -s "$STREAM" -d "$DEVICES" \
		-e "$ENCODING" "$@") || fail "loadgen failed: $out"
	echo "$out"
}

# awk arithmetic on shell values: calc 'a / b' a=1 b=2
calc()
{
	local expr=$1 kv
	local args=()
	shift
	for kv in "$@"; do
		args+=(-v "$kv")
	done
	awk "${args[@]}" "BEGIN { printf \"%.6f\", $expr }" </dev/null
}

# --- the measurements -----------------------------------------------------------

ceiling_ready=no

# Stage the rows of the last drain for the ceiling: one row of arrays per
# 1000-row chunk, in stream order, and the procedure that inserts them.
prepare_ceiling()
{
	cat >"$dir/ceiling.sql" <<-EOF_SQL
	CREATE SCHEMA bench;
	CREATE TABLE bench.rows AS
	  SELECT device_id, ts, lat, lon, altitude, speed, heading, satellites,
	         priority, attributes, stream_id,
	         row_number() OVER (ORDER BY split_part(stream_id, '-', 1)::bigint,
	                                     split_part(stream_id, '-', 2)::bigint) AS ord
	  FROM public.positions;
	CREATE TABLE bench.chunks AS
	  SELECT (ord - 1) / $CEILING_CHUNK AS chunk,
	         array_agg(device_id ORDER BY ord) AS device_id,
	         array_agg(ts ORDER BY ord) AS ts,
	         array_agg(lat ORDER BY ord) AS lat,
	         array_agg(lon ORDER BY ord) AS lon,
	         array_agg(altitude ORDER BY ord) AS altitude,
	         array_agg(speed ORDER BY ord) AS speed,
	         array_agg(heading ORDER BY ord) AS heading,
	         array_agg(satellites ORDER BY ord) AS satellites,
	         array_agg(priority ORDER BY ord) AS priority,
	         array_agg(attributes ORDER BY ord) AS attributes,
	         array_agg(stream_id ORDER BY ord) AS stream_id
	  FROM bench.rows GROUP BY 1;
	-- The ceiling of issue 5: one connection, 1000 rows per committed
	-- transaction, arrays built beforehand.  They are loaded into a
	-- variable first, so that the timed loop only inserts and commits.
	CREATE PROCEDURE bench.ceiling(INOUT seconds float8 DEFAULT NULL,
	                               INOUT inserted bigint DEFAULT NULL)
	LANGUAGE plpgsql AS \$\$
	DECLARE
	  chunks bench.chunks[];
	  c bench.chunks;
	  started timestamptz;
	  n bigint;
	BEGIN
	  SELECT array_agg(x ORDER BY x.chunk) INTO chunks FROM bench.chunks x;
	  inserted := 0;
	  started := clock_timestamp();
	  FOREACH c IN ARRAY chunks LOOP
	    INSERT INTO public.positions (device_id, ts, lat, lon, altitude, speed,
	                                  heading, satellites, priority, attributes,
	                                  stream_id)
	    SELECT * FROM unnest(c.device_id, c.ts, c.lat, c.lon, c.altitude,
	                         c.speed, c.heading, c.satellites, c.priority,
	                         c.attributes, c.stream_id)
	    ON CONFLICT (device_id, ts) DO NOTHING;
	    GET DIAGNOSTICS n = ROW_COUNT;
	    inserted := inserted + n;
	    COMMIT;
	  END LOOP;
	  seconds := extract(epoch FROM clock_timestamp() - started);
	END
	\$\$;
	EOF_SQL
	sql -f "$dir/ceiling.sql" >/dev/null
	ceiling_ready=yes
}

# One drain of N pre-loaded entries.  Sets drain_rate, drain_cpu_us and
# drain_faults (minor page faults of the workers per entry).
drain_once()
{
	local label=$1 out pids t0 t1 count dead secs
	local cpu0 flt0 run0 wait0 cpu1 flt1 run1 wait1
	set_enabled off
	reset_data
	out=$(run_loadgen -n "$N" --seed 1)
	[[ "$(redis XLEN "$STREAM")" == "$N" ]] || fail "the stream does not hold $N entries"

	pids=$(worker_pids)
	# shellcheck disable=SC2086
	read -r cpu0 flt0 run0 wait0 <<<"$(proc_sample $pids)"
	if [[ "$label" == perf ]]; then
		# symbols by build id, even if the library is replaced meanwhile
		perf buildid-cache -a "$pkglibdir/processor.so" 2>/dev/null || true
		# shellcheck disable=SC2086
		perf record -q -g --buildid-mmap -F 999 -o "$dir/perf.data" -p "${pids// /,}" \
			>"$dir/perf.log" 2>&1 &
		perf_pid=$!
		sleep 1
	fi
	t0=$(now)
	set_enabled on
	wait_for "the drain of $N entries" drained "$N"
	t1=$(sql -c 'SELECT extract(epoch FROM max(last_batch_at)) FROM processor.worker_stats')
	# shellcheck disable=SC2086
	read -r cpu1 flt1 run1 wait1 <<<"$(proc_sample $pids)"
	if [[ "$label" == perf ]]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		perf_pid=
	fi
	[[ "$(worker_pids)" == "$pids" ]] || fail "a worker restarted during the drain"

	count=$(sql -c 'SELECT count(*) FROM public.positions')
	dead=$(sql -c 'SELECT count(*) FROM public.positions_dead_letter')
	[[ "$count" == "$N" && "$dead" == 0 ]] ||
		fail "after the drain: $count rows and $dead dead letters, expected $N and 0"

	secs=$(calc 't1 - t0' t1="$t1" t0="$t0")
	drain_rate=$(calc 'n / s' n="$N" s="$secs")
	drain_cpu_us=$(calc '(c1 - c0) * 1e6 / n' c1="$cpu1" c0="$cpu0" n="$N")
	drain_faults=$(calc '(f1 - f0) / n' f1="$flt1" f0="$flt0" n="$N")
	printf '  %-22s %d entries in %.3f s = %.0f entries/s; worker CPU %.2f s = %.1f µs/entry, %.2f page faults/entry; on a CPU %.2f s, waiting for one %.2f s\n' \
		"$label:" "$N" "$secs" "$drain_rate" \
		"$(calc 'a - b' a="$cpu1" b="$cpu0")" "$drain_cpu_us" "$drain_faults" \
		"$(calc 'a - b' a="$run1" b="$run0")" "$(calc 'a - b' a="$wait1" b="$wait0")"
}

# One ceiling run on the rows of the drain just done.  Sets ceiling_rate.
ceiling_once()
{
	local label=$1 result secs inserted
	set_enabled off
	[[ "$ceiling_ready" == yes ]] || prepare_ceiling
	sql -c 'TRUNCATE public.positions' -c 'CHECKPOINT'
	result=$(sql -F ' ' -c 'CALL bench.ceiling()')
	read -r secs inserted <<<"$result"
	[[ "$inserted" == "$N" ]] || fail "the ceiling inserted $inserted rows, expected $N"
	ceiling_rate=$(calc 'n / s' n="$N" s="$secs")
	printf '  %-22s %d rows in %.3f s = %.0f rows/s\n' "$label:" "$N" "$secs" \
		"$ceiling_rate"
}

# One latency run at RATE entries/s.  Sets lat_p50, lat_p99, lat_max (ms,
# to received_at), com_p50, com_p99, com_max (ms, to the commit) and
# lat_cpu_us.
latency_once()
{
	local label=$1 n=$((RATE * LATENCY_SECONDS)) out pids cpu0 cpu1 rows result
	local batches0 batches1
	set_enabled off
	reset_data
	set_enabled on
	sleep 1						# the workers are waiting in XREADGROUP
	pids=$(worker_pids)
	# shellcheck disable=SC2086
	read -r cpu0 _ <<<"$(proc_sample $pids)"
	batches0=$(sql -c 'SELECT sum(batches) FROM processor.worker_stats')
	out=$(run_loadgen -n "$n" -r "$RATE" --stamp --seed 2)
	wait_for "the latency run's $n entries" drained "$n"
	# shellcheck disable=SC2086
	read -r cpu1 _ <<<"$(proc_sample $pids)"
	batches1=$(sql -c 'SELECT sum(batches) FROM processor.worker_stats')
	rows=$(sql -c 'SELECT count(*) FROM public.positions')
	[[ "$rows" == "$n" ]] || fail "the latency run stored $rows rows, expected $n"
	result=$(sql -F ' ' -c "
		SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
		       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
		       round(max(ms)::numeric, 2),
		       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY cms)::numeric, 2),
		       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY cms)::numeric, 2),
		       round(max(cms)::numeric, 2)
		FROM (SELECT (extract(epoch FROM received_at) * 1000000 - sent) / 1000 AS ms,
		             (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000
		              - sent) / 1000 AS cms
		      FROM (SELECT received_at, xmin, (attributes->>'sent_us')::numeric AS sent
		            FROM public.positions) r) s")
	read -r lat_p50 lat_p99 lat_max com_p50 com_p99 com_max <<<"$result"
	lat_cpu_us=$(calc '(c1 - c0) * 1e6 / n' c1="$cpu1" c0="$cpu0" n="$n")
	printf '  %-22s %d entries at %s/s (loadgen: %s/s): to received_at p50 %s ms, p99 %s ms, max %s ms; to commit p50 %s ms, p99 %s ms, max %s ms; worker CPU %.1f µs/entry, %.1f entries/batch\n' \
		"$label:" "$n" "$RATE" "${out##* rate=}" \
		"$lat_p50" "$lat_p99" "$lat_max" "$com_p50" "$com_p99" "$com_max" \
		"$lat_cpu_us" "$(calc 'n / (b1 - b0)' n="$n" b1="$batches1" b0="$batches0")"
}

# Restart the cluster (after ALTER SYSTEM of a postmaster setting) and wait
# for $nworkers paused workers.
restart_postgres()
{
	stop_postgres
	start_postgres
	wait_for "$nworkers paused workers" workers_in "$nworkers" paused
}

# "median min max" of the arguments (the median of an even count is the
# mean of the middle two).
summary()
{
	printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			print m, v[1], v[NR]
		}'
}

# --- run -----------------------------------------------------------------------

nworkers=$WORKERS
pg_version=$(sql -c 'SHOW server_version')
redis_version=$(redis INFO server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')

say "processor benchmark: N=$N devices=$DEVICES encoding=$ENCODING processor.batch_size=$BATCH workers=$WORKERS runs=$RUNS"
echo "  $(nproc) CPUs; PostgreSQL $pg_version (synchronous_commit = $(sql -c 'SHOW synchronous_commit')); Redis $redis_version"
echo "  directory $dir: PostgreSQL on port $pg_port, Redis on port $redis_port"
echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running skews the figures)"

# Warm up: the workers create the tables and connect to Redis.
redis XGROUP CREATE "$STREAM" "$GROUP" 0 MKSTREAM >/dev/null
set_enabled on
wait_for "the tables" sql -c "SELECT to_regclass('public.positions') IS NOT NULL
	AND to_regclass('public.positions_dead_letter') IS NOT NULL"

drain=()
drain_cpu=()
drain_flt=()
ceiling=()
ratio=()
lat50=()
lat99=()
latmax=()
com50=()
com99=()
commax=()
latcpu=()
drain2=()
drain2_cpu=()

say "drain and ceiling ($RUNS runs)"
for run in $(seq "$RUNS"); do
	drain_once "drain $run/$RUNS"
	drain+=("$drain_rate")
	drain_cpu+=("$drain_cpu_us")
	drain_flt+=("$drain_faults")
	ceiling_once "ceiling $run/$RUNS"
	ceiling+=("$ceiling_rate")
	ratio+=("$(calc 'd / c' d="$drain_rate" c="$ceiling_rate")")
done

if [[ "$PERF" == 1 ]]; then
	say "profile: one more drain under perf record -g (not counted)"
	drain_once perf
fi

say "latency at $RATE entries/s for $LATENCY_SECONDS s ($RUNS runs; track_commit_timestamp = on)"
set_enabled off
sql -c 'ALTER SYSTEM SET track_commit_timestamp = on'
restart_postgres
for run in $(seq "$RUNS"); do
	latency_once "latency $run/$RUNS"
	lat50+=("$lat_p50")
	lat99+=("$lat_p99")
	latmax+=("$lat_max")
	com50+=("$com_p50")
	com99+=("$com_p99")
	commax+=("$com_max")
	latcpu+=("$lat_cpu_us")
done
set_enabled off
sql -c 'ALTER SYSTEM RESET track_commit_timestamp'

if [[ "$MORE_WORKERS" -gt 0 && "$MORE_WORKERS" -ne "$WORKERS" ]]; then
	say "drain with processor.workers = $MORE_WORKERS ($RUNS runs)"
	sql -c "ALTER SYSTEM SET processor.workers = $MORE_WORKERS"
	nworkers=$MORE_WORKERS
	restart_postgres
	for run in $(seq "$RUNS"); do
		drain_once "drain $run/$RUNS"
		drain2+=("$drain_rate")
		drain2_cpu+=("$drain_cpu_us")
	done
fi

# --- report --------------------------------------------------------------------

# row LABEL FORMAT TARGET VERDICT values...
row()
{
	local label=$1 fmt=$2 target=$3 verdict=$4
	shift 4
	local med min max
	read -r med min max <<<"$(summary "$@")"
	printf "  %-44s $fmt   $fmt – $fmt   %-12s %s\n" "$label" "$med" "$min" "$max" \
		"$target" "$verdict"
}

# verdict VALUE OP LIMIT: "met" or "MISSED"
verdict()
{
	if awk -v v="$1" -v l="$3" "BEGIN { exit !(v $2 l) }"; then
		echo met
	else
		echo MISSED
	fi
}

read -r drain_med _ <<<"$(summary "${drain[@]}")"
read -r ceiling_med _ <<<"$(summary "${ceiling[@]}")"
read -r ratio_med _ <<<"$(summary "${ratio[@]}")"
read -r cpu_med _ <<<"$(summary "${drain_cpu[@]}")"
read -r p99_med _ <<<"$(summary "${lat99[@]}")"

say "results: median of $RUNS runs, min – max"
printf "  %-44s %9s   %21s   %-12s %s\n" figure median "min – max" target ""
row "drain, $WORKERS worker(s) (entries/s)" '%9.0f' '' '' "${drain[@]}"
row "ceiling, unnest x 1000 (rows/s)" '%9.0f' '' '' "${ceiling[@]}"
row "drain / ceiling" '%9.2f' '>= 0.80' "$(verdict "$ratio_med" '>=' 0.80)" "${ratio[@]}"
row "worker CPU per entry, drain (µs)" '%9.1f' '<= 15' "$(verdict "$cpu_med" '<=' 15)" "${drain_cpu[@]}"
row "worker minor page faults per entry, drain" '%9.2f' '' '' "${drain_flt[@]}"
row "worker CPU per entry, $RATE/s (µs)" '%9.1f' '' '' "${latcpu[@]}"
row "latency p50 at $RATE/s, to received_at (ms)" '%9.2f' '' '' "${lat50[@]}"
row "latency p99 at $RATE/s, to received_at (ms)" '%9.2f' '<= 20' "$(verdict "$p99_med" '<=' 20)" "${lat99[@]}"
row "latency max at $RATE/s, to received_at (ms)" '%9.2f' '' '' "${latmax[@]}"
row "  to commit: p50 (ms)" '%9.2f' '' '' "${com50[@]}"
row "  to commit: p99 (ms)" '%9.2f' '' '' "${com99[@]}"
row "  to commit: max (ms)" '%9.2f' '' '' "${commax[@]}"
if [[ ${#drain2[@]} -gt 0 ]]; then
	read -r drain2_med _ <<<"$(summary "${drain2[@]}")"
	row "drain, $MORE_WORKERS workers (entries/s)" '%9.0f' "> $WORKERS worker(s)" \
		"$(verdict "$drain2_med" '>' "$drain_med")" "${drain2[@]}"
	row "CPU per entry, $MORE_WORKERS workers (µs)" '%9.1f' '' '' "${drain2_cpu[@]}"
fi
printf '  drain / ceiling of the medians: %.2f (%.0f / %.0f)\n' \
	"$(calc 'd / c' d="$drain_med" c="$ceiling_med")" "$drain_med" "$ceiling_med"
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ "$PERF" == 1 ]]; then
	# Debian's postgres is stripped: its static functions show as addresses.
	say "perf: the worker's top symbols during one drain, self time"
	perf report -i "$dir/perf.data" --no-children --sort dso,symbol --stdio \
		--percent-limit 0.7 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 30 || true
	say "perf: the same, inclusive of callees (processor.so and named postgres functions)"
	perf report -i "$dir/perf.data" --children --sort dso,symbol --stdio \
		--percent-limit 2 2>/dev/null | grep -E '^ +[0-9.]+%' |
		grep -vE '\[unknown\]|0x0000' | head -n 40 || true
	say "perf: by shared object"
	perf report -i "$dir/perf.data" --no-children --sort dso --stdio \
		2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 12 || true
	if [[ "$KEEP" == 1 ]]; then
		echo "  perf report -i $dir/perf.data  for the call graphs"
	fi
fi
