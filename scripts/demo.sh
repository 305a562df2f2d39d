#!/usr/bin/env bash
#
# demo.sh: "make demo", processor end to end on a throwaway setup.
#
# As root on a fresh Debian 12: installs the missing packages
# (scripts/install-deps.sh), builds and installs the extension, starts a
# temporary PostgreSQL 15 cluster (as "postgres", loopback, free port,
# shared_preload_libraries = 'processor') and a redis-server (loopback, free
# port), CREATE EXTENSION processor, publishes positions of 20 devices in
# both encodings plus one invalid entry, waits until they have landed, and
# prints rows, counts and the consumer group's pending summary.  Both
# servers are stopped by pid and the directory removed on exit, success or
# not.  Exit status 0 when everything landed within DEMO_TIMEOUT seconds
# (default 30).
#
# As another user: nothing is installed with apt-get; the extension is
# installed only if that user may write to PostgreSQL's directories
# (otherwise the copy already installed is used), and both servers run as
# that user.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEVICES=20
POSITIONS_PER_DEVICE=20
DEMO_TIMEOUT=${DEMO_TIMEOUT:-30}
STREAM=telemetry:t

is_root=no
[[ "$(id -u)" -eq 0 ]] && is_root=yes

say()
{
	printf '\n=== %s\n' "$*"
}

# --- packages, build, install ----------------------------------------------

if [[ "$is_root" == yes ]]; then
	scripts/install-deps.sh
else
	scripts/install-deps.sh --check
fi

if [[ -z "${PG_CONFIG:-}" ]]; then
	if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
bindir=$("$PG_CONFIG" --bindir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"

say "building processor"
make -s -j2 PG_CONFIG="$PG_CONFIG" </dev/null
if [[ -w "$pkglibdir" && -w "$extdir" ]]; then
	make -s install PG_CONFIG="$PG_CONFIG" </dev/null >/dev/null
else
	echo "cannot write to $pkglibdir: using the processor already installed there"
fi

# --- servers ------------------------------------------------------------------

demo=$(mktemp -d "${TMPDIR:-/tmp}/processor-demo.XXXXXX")
pg_pid=
redis_pid=

# Run a command as the user PostgreSQL runs as.
as_pg()
{
	if [[ "$is_root" == yes ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cleanup()
{
	local status=$?
	trap - EXIT INT TERM
	if [[ $status -ne 0 && -f "$demo/postgres.log" ]]; then
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
as_pg "$bindir/initdb" -D "$demo/data" -U postgres -E UTF8 --locale=C \
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
	"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" \
		-U postgres -d postgres "$@" </dev/null
}

sql -c 'CREATE EXTENSION processor'

# --- publish -------------------------------------------------------------------

# One command in RESP, the protocol redis-cli --pipe sends as is.  LC_ALL=C
# makes ${#arg} a length in bytes.
resp()
{
	local arg
	printf '*%d\r\n' $#
	for arg in "$@"; do
		printf '$%d\r\n%s\r\n' "${#arg}" "$arg"
	done
}

# Device d, step s: even steps in JSON with an ISO time, odd steps flat with
# epoch milliseconds; all (device_id, ts) pairs distinct.  Plus one entry
# with lat 91.5, which lands in the dead-letter table.  printf -v: no
# subshell per entry.
publish()
{
	local d s device lat lon payload
	local base_ms=1767225600000		# 2026-01-01T00:00:00Z
	for ((d = 1; d <= DEVICES; d++)); do
		printf -v device '3563070424%05d' "$d"
		for ((s = 0; s < POSITIONS_PER_DEVICE; s++)); do
			printf -v lat '52.%05d' $((30000 + d * 200 + s * 7))
			printf -v lon '4.%05d' $((85000 + d * 150 + s * 11))
			if ((s % 2 == 0)); then
				printf -v payload '{"device_id":"%s","ts":"2026-01-01T00:%02d:%02d.000Z","lat":%s,"lon":%s,"speed":%d,"heading":%d,"satellites":%d,"attributes":{"239":1,"66":%d}}' \
					"$device" $((s / 60)) $((s % 60)) "$lat" "$lon" \
					$((s * 3 % 90)) $((d * 17 % 360)) $((6 + s % 6)) \
					$((12000 + s))
				resp XADD "$STREAM" '*' payload "$payload"
			else
				resp XADD "$STREAM" '*' device_id "$device" \
					ts $((base_ms + s * 1000)) lat "$lat" lon "$lon" \
					speed $((s * 3 % 90))
			fi
		done
	done
	resp XADD "$STREAM" '*' device_id 356307042499999 ts "$base_ms" \
		lat 91.5 lon 4.9
}

expected=$((DEVICES * POSITIONS_PER_DEVICE))
say "publishing $expected positions of $DEVICES devices (JSON and flat) and 1 invalid entry to $STREAM"
LC_ALL=C publish >"$demo/commands.resp"
redis-cli -h 127.0.0.1 -p "$redis_port" --pipe <"$demo/commands.resp" | tail -n 1

# --- wait and show -------------------------------------------------------------

say "waiting up to $DEMO_TIMEOUT s for the worker"
landed=no
deadline=$((SECONDS + DEMO_TIMEOUT))
while ((SECONDS < deadline)); do
	# Count only once the worker has created both tables, so that the server
	# log (shown on failure) holds the worker's messages, not our errors.
	got=$(sql -At -c "SELECT to_regclass('public.positions') IS NOT NULL AND
		to_regclass('public.positions_dead_letter') IS NOT NULL")
	if [[ "$got" == t ]]; then
		got=$(sql -At -c "SELECT (SELECT count(*) FROM public.positions) || ' ' ||
			(SELECT count(*) FROM public.positions_dead_letter)")
	else
		got=
	fi
	pending=$(redis XPENDING "$STREAM" processor 2>/dev/null | head -n 1 || true)
	if [[ "$got" == "$expected 1" && "$pending" == 0 ]]; then
		landed=yes
		break
	fi
	sleep 0.5
done
echo "positions, dead letters: ${got:-none yet}; pending: ${pending:-no group yet}" \
	"($((SECONDS - deadline + DEMO_TIMEOUT)) s)"

if [[ "$landed" != yes ]]; then
	echo "FAILED: expected $expected positions, 1 dead letter and nothing pending within $DEMO_TIMEOUT s" >&2
	exit 1
fi

say "SELECT ... FROM positions ORDER BY device_id, ts LIMIT 5"
sql -c "SET TimeZone = 'UTC'" -c "SELECT device_id, ts, lat, lon, speed, attributes, stream_id
	FROM positions ORDER BY device_id, ts LIMIT 5"

say "SELECT count(*) FROM positions"
sql -c 'SELECT count(*) FROM positions'

say "SELECT stream_id, error FROM positions_dead_letter"
sql -c 'SELECT stream_id, error FROM positions_dead_letter'

say "XPENDING $STREAM processor: $(redis XPENDING "$STREAM" processor | head -n 1) entries pending"
say "XINFO GROUPS $STREAM"
redis XINFO GROUPS "$STREAM" | paste - -

say "SELECT device_id, ts, lat, lon, positions_seen FROM processor.device_state LIMIT 3"
sql -c "SET TimeZone = 'UTC'" -c "SELECT device_id, ts, lat, lon, positions_seen
	FROM processor.device_state ORDER BY device_id LIMIT 3" ||
	echo "(processor.device_state is not available in this build)"

say "SELECT * FROM processor.worker_stats"
sql -x -c 'SELECT * FROM processor.worker_stats' ||
	echo "(processor.worker_stats is not available in this build)"

say "demo finished: $expected positions stored, 1 invalid entry dead-lettered, nothing pending"
