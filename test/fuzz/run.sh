#!/usr/bin/env bash
#
# run.sh: build one of the codec's two libFuzzer harnesses and run it.
#
#   test/fuzz/run.sh [SECONDS]      the hosted harness (fuzz_codec.c): the
#                                   codec exactly as the worker runs it,
#                                   with the server's own routines, inside
#                                   a single-user PostgreSQL backend; for
#                                   SECONDS (default 60), as a user
#                                   PostgreSQL accepts (not root)
#   test/fuzz/run.sh standalone [SECONDS]
#                                   the standalone harness (standalone.c):
#                                   the codec's parsing and validation core
#                                   alone behind src/codec_build.h, one
#                                   executable, no backend (any user)
#
#   make fuzzcheck                  hosted for FUZZ_TIME s (60), then
#                                   standalone for FUZZ_STANDALONE_TIME s
#                                   (30); part of make test
#   make fuzz                       each for FUZZ_LONG_TIME s (an hour)
#
# Hosted: compile the codec (src/codec*.c) and the
# harness with clang (-fsanitize=fuzzer-no-link,address,undefined) into
# fuzz_codec.so; initdb a throwaway cluster (UTF8, C locale); run
# "postgres --single" with the ASan runtime preloaded and call
# processor_fuzz_codec(), which runs libFuzzer.  Standalone: compile
# the codec's core (src/codec*.c but codec_build.c) with FRONTEND and
# link it with
# standalone.c and libpgcommon (-fsanitize=fuzzer,address,undefined).
# Both read the seed corpus test/fuzz/corpus/ (read only) and keep a
# working corpus in $FUZZ_DIR (standalone: $FUZZ_DIR/standalone).
#
# On a finding: the exit status is non-zero, the input is in
# $FUZZ_DIR/crash-* (or leak-, timeout-, oom-), and the sanitizer's report
# is in $FUZZ_DIR/fuzz.log.  Replay one input with
#   test/fuzz/run.sh [standalone] replay FILE
# A finding is fixed in the codec and becomes a regression test: the input
# goes into test/fuzz/corpus/ (replayed by every run) and, when it can be
# expressed there, into the pg_regress or TAP tests.
#
# Environment: PG_CONFIG (default PostgreSQL 15's), CLANG (default clang-14,
# else clang), FUZZ_DIR (build and working directory, default
# ./tmp_check_fuzz), FUZZ_ARGS (more libFuzzer options, e.g. -jobs=4).
#
# The preload shim nonls.so makes bindtextdomain() a no-op: with the ASan
# runtime preloaded, the postgres executable otherwise deadlocks at start
# inside glibc's bindtextdomain (the constructors of libgpg-error and
# gnutls call it before ASan is initialised).  The harness needs no
# translated messages.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
srcdir=$(pwd)

harness=hosted
if [[ "${1:-}" == standalone ]]; then
	harness=standalone
	shift
fi
mode=fuzz
seconds=60
if [[ "${1:-}" == replay ]]; then
	mode=replay
	replay_file=$(realpath "${2:?usage: run.sh [standalone] replay FILE}")
elif [[ -n "${1:-}" ]]; then
	seconds=$1
fi

if [[ "$harness" == hosted && "$(id -u)" -eq 0 ]]; then
	echo "fuzz: PostgreSQL refuses to run as root; run as another user" \
		"(make test runs this as \"postgres\")" >&2
	exit 1
fi

if [[ -z "${PG_CONFIG:-}" ]]; then
	if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
bindir=$("$PG_CONFIG" --bindir)
includedir=$("$PG_CONFIG" --includedir-server)
pkglibdir=$("$PG_CONFIG" --pkglibdir)

CLANG=${CLANG:-$(command -v clang-14 || command -v clang || true)}
if [[ -z "$CLANG" ]]; then
	echo "fuzz: clang not found (Debian: clang-14 libclang-rt-14-dev)" >&2
	exit 1
fi
asan_rt=$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.so)
fuzzer_rt=$("$CLANG" -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a)
for f in "$asan_rt" "$fuzzer_rt"; do
	if [[ ! -f "$f" ]]; then
		echo "fuzz: $f not found (Debian: libclang-rt-14-dev)" >&2
		exit 1
	fi
done

FUZZ_DIR=${FUZZ_DIR:-$srcdir/tmp_check_fuzz}
if [[ "$harness" == standalone ]]; then
	FUZZ_DIR=$FUZZ_DIR/standalone
fi
mkdir -p "$FUZZ_DIR/corpus"
log=$FUZZ_DIR/fuzz.log

# libFuzzer's arguments, one per line (the corpus directories last).
fuzz_args() {
	if [[ "$mode" == replay ]]; then
		echo "$replay_file"
		return
	fi
	printf '%s\n' "-max_total_time=$seconds" -max_len=70000 -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		"-dict=$srcdir/test/fuzz/codec.dict" "-artifact_prefix=$FUZZ_DIR/"
	for a in ${FUZZ_ARGS:-}; do
		echo "$a"
	done
	printf '%s\n' "$FUZZ_DIR/corpus" "$srcdir/test/fuzz/corpus"
}

# The run's summary; on a finding the report, and exit status 1.
report() {
	local status=$1

	grep -E '^(Done|stat::|INFO: Loaded|#[0-9]+[[:space:]]+(INITED|DONE))' "$log" || true
	if [[ $status -ne 0 ]] || grep -qE '^(==[0-9]+==ERROR|FUZZ FINDING: |SUMMARY: )' "$log"; then
		echo "fuzz: FINDING (exit status $status); report:" >&2
		grep -E -A30 '^(==[0-9]+==ERROR|FUZZ FINDING: |SUMMARY: |.*runtime error)' "$log" \
			| head -60 >&2 || tail -40 "$log" >&2
		ls "$FUZZ_DIR"/{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null >&2 || true
		exit 1
	fi
	echo "fuzz: no finding"
}

if [[ "$mode" == replay ]]; then
	echo "fuzz: $harness harness replaying $replay_file; log in $log"
else
	echo "fuzz: $harness harness fuzzing for ${seconds}s; log in $log"
fi

mapfile -t args < <(fuzz_args)
status=0

if [[ "$harness" == standalone ]]; then
	for f in "$pkglibdir/libpgcommon.a" "$pkglibdir/libpgport.a"; do
		if [[ ! -f "$f" ]]; then
			echo "fuzz: $f not found (Debian: postgresql-server-dev-15)" >&2
			exit 1
		fi
	done
	cflags=(-g -O1 -DFRONTEND -fno-omit-frame-pointer -fwrapv
		-fno-strict-aliasing -Wall -Wno-ignored-attributes
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
		-I"$includedir" -I"$srcdir/src" -I"$srcdir/test/fuzz")
	objs=()
	for src in src/codec.c src/codec_json.c src/codec_attrs.c src/codec_text.c \
		test/fuzz/fuzz_common.c test/fuzz/standalone.c; do
		obj=$FUZZ_DIR/$(basename "$src" .c).o
		"$CLANG" "${cflags[@]}" -c "$src" -o "$obj"
		objs+=("$obj")
	done
	"$CLANG" "${cflags[@]}" -o "$FUZZ_DIR/standalone" "${objs[@]}" \
		"$pkglibdir/libpgcommon.a" "$pkglibdir/libpgport.a" -lm
	UBSAN_OPTIONS=print_stacktrace=1 "$FUZZ_DIR/standalone" "${args[@]}" \
		>"$log" 2>&1 || status=$?
	report $status
	exit 0
fi

# Hosted 1. Build.  -Bsymbolic: the module's coverage counters must
# register with the libFuzzer linked into it, not with the preloaded ASan
# runtime's weak stand-ins of the same names.
cflags=(-g -O1 -fPIC -fno-omit-frame-pointer -fwrapv -fno-strict-aliasing
	-Wall -Wno-ignored-attributes
	-fsanitize=fuzzer-no-link,address,undefined
	-fno-sanitize-recover=undefined -shared-libasan
	-I"$includedir" -I"$srcdir/src" -I"$srcdir/test/fuzz")
objs=()
for src in src/codec.c src/codec_json.c src/codec_attrs.c src/codec_text.c \
	src/codec_build.c test/fuzz/fuzz_common.c test/fuzz/fuzz_codec.c; do
	obj=$FUZZ_DIR/$(basename "$src" .c).o
	"$CLANG" "${cflags[@]}" -c "$src" -o "$obj"
	objs+=("$obj")
done
"$CLANG" -shared "${cflags[@]}" -Wl,-Bsymbolic -o "$FUZZ_DIR/fuzz_codec.so" \
	"${objs[@]}" "$fuzzer_rt" -lstdc++
"$CLANG" -shared -fPIC -O2 -o "$FUZZ_DIR/nonls.so" test/fuzz/nonls.c

# Hosted 2. A throwaway cluster.
rm -rf "$FUZZ_DIR/data"
"$bindir/initdb" -D "$FUZZ_DIR/data" -E UTF8 --locale=C -A trust \
	>"$FUZZ_DIR/initdb.log" 2>&1

# Hosted 3. Fuzz (or replay) in a single-user backend: the arguments go in
# as a text[] of SQL literals (none of them holds a quote).
sql_args=()
for a in "${args[@]}"; do
	sql_args+=("'$a'")
done
sql="CREATE FUNCTION processor_fuzz_codec(text[]) RETURNS int
  AS '$FUZZ_DIR/fuzz_codec.so' LANGUAGE C STRICT;
SELECT processor_fuzz_codec(ARRAY[$(IFS=,; echo "${sql_args[*]}")]);"

printf '%s\n' "$sql" | tr '\n' ' ' | sed 's/$/\n/' |
	env LD_PRELOAD="$asan_rt:$FUZZ_DIR/nonls.so" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1 \
		"$bindir/postgres" --single -D "$FUZZ_DIR/data" postgres \
		>"$log" 2>&1 || status=$?
report $status
