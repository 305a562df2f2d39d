#!/usr/bin/env bash
#
# run.sh: build the codec's libFuzzer harness and run it inside a
# single-user PostgreSQL backend (see fuzz_codec.c for why it is hosted).
#
#   test/fuzz/run.sh [SECONDS]      fuzz for SECONDS (default 60), as a
#                                   user PostgreSQL accepts (not root)
#
#   make fuzzcheck                  60 s (part of make test)
#   make fuzz                       an hour, or FUZZ_LONG_TIME seconds
#
# Steps: compile src/codec.c, src/codec_json.c and fuzz_codec.c with clang
# (-fsanitize=fuzzer-no-link,address,undefined) into fuzz_codec.so; initdb
# a throwaway cluster (UTF8, C locale); run "postgres --single" with the
# ASan runtime preloaded and call processor_fuzz_codec(), which runs
# libFuzzer over the seed corpus test/fuzz/corpus/ (read only) and a
# working corpus, for SECONDS.
#
# On a finding: the exit status is non-zero, the input is in
# $FUZZ_DIR/crash-* (or leak-, timeout-, oom-), and the sanitizer's report
# is in $FUZZ_DIR/fuzz.log.  Replay one input with
#   test/fuzz/run.sh replay FILE
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

mode=fuzz
seconds=60
if [[ "${1:-}" == replay ]]; then
	mode=replay
	replay_file=$(realpath "${2:?usage: run.sh replay FILE}")
elif [[ -n "${1:-}" ]]; then
	seconds=$1
fi

if [[ "$(id -u)" -eq 0 ]]; then
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
mkdir -p "$FUZZ_DIR/corpus"
log=$FUZZ_DIR/fuzz.log

# 1. Build.  -Bsymbolic: the module's coverage counters must register with
# the libFuzzer linked into it, not with the preloaded ASan runtime's
# weak stand-ins of the same names.
cflags=(-g -O1 -fPIC -fno-omit-frame-pointer -fwrapv -fno-strict-aliasing
	-Wall -Wno-ignored-attributes
	-fsanitize=fuzzer-no-link,address,undefined
	-fno-sanitize-recover=undefined -shared-libasan
	-I"$includedir" -I"$srcdir/src")
objs=()
for src in src/codec.c src/codec_json.c test/fuzz/fuzz_codec.c; do
	obj=$FUZZ_DIR/$(basename "$src" .c).o
	"$CLANG" "${cflags[@]}" -c "$src" -o "$obj"
	objs+=("$obj")
done
"$CLANG" -shared "${cflags[@]}" -Wl,-Bsymbolic -o "$FUZZ_DIR/fuzz_codec.so" \
	"${objs[@]}" "$fuzzer_rt" -lstdc++
"$CLANG" -shared -fPIC -O2 -o "$FUZZ_DIR/nonls.so" test/fuzz/nonls.c

# 2. A throwaway cluster.
rm -rf "$FUZZ_DIR/data"
"$bindir/initdb" -D "$FUZZ_DIR/data" -E UTF8 --locale=C -A trust \
	>"$FUZZ_DIR/initdb.log" 2>&1

# 3. Fuzz (or replay) in a single-user backend.
if [[ "$mode" == replay ]]; then
	args=("'$replay_file'")
else
	args=("'-max_total_time=$seconds'" "'-max_len=70000'" "'-timeout=10'"
		"'-rss_limit_mb=2048'" "'-print_final_stats=1'"
		"'-dict=$srcdir/test/fuzz/codec.dict'"
		"'-artifact_prefix=$FUZZ_DIR/'")
	for a in ${FUZZ_ARGS:-}; do
		args+=("'$a'")
	done
	args+=("'$FUZZ_DIR/corpus'" "'$srcdir/test/fuzz/corpus'")
fi
sql="CREATE FUNCTION processor_fuzz_codec(text[]) RETURNS int
  AS '$FUZZ_DIR/fuzz_codec.so' LANGUAGE C STRICT;
SELECT processor_fuzz_codec(ARRAY[$(IFS=,; echo "${args[*]}")]);"

if [[ "$mode" == replay ]]; then
	echo "fuzz: replaying $replay_file; log in $log"
else
	echo "fuzz: fuzzing for ${seconds}s; log in $log"
fi
status=0
printf '%s\n' "$sql" | tr '\n' ' ' | sed 's/$/\n/' |
	env LD_PRELOAD="$asan_rt:$FUZZ_DIR/nonls.so" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1 \
		"$bindir/postgres" --single -D "$FUZZ_DIR/data" postgres \
		>"$log" 2>&1 || status=$?

grep -E '^(Done|stat::|INFO: Loaded|#[0-9]+[[:space:]]+(INITED|DONE))' "$log" || true
if [[ $status -ne 0 ]] || grep -qE '^(==[0-9]+==ERROR|FUZZ FINDING: |SUMMARY: )' "$log"; then
	echo "fuzz: FINDING (exit status $status); report:" >&2
	grep -E -A30 '^(==[0-9]+==ERROR|FUZZ FINDING: |SUMMARY: |.*runtime error)' "$log" \
		| head -60 >&2 || tail -40 "$log" >&2
	ls "$FUZZ_DIR"/{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null >&2 || true
	exit 1
fi
echo "fuzz: no finding"
