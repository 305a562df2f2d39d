#!/usr/bin/env bash
#
# run-tests.sh: "make test", every test of processor in one command.
#
# As root on a fresh Debian 12 (CI runs it that way):
#   1. scripts/install-deps.sh installs the missing Debian packages;
#   2. make, then make install into PostgreSQL 15's directories;
#   3. copies the tree (without .git) to a fresh directory owned by
#      "postgres", because PostgreSQL refuses to run as root and the tests
#      write results next to themselves;
#   4. there, as "postgres": make regresscheck (pg_regress on a temporary
#      instance that preloads processor, test/regress.conf), then
#      make tapcheck (prove over test/t/*.pl, each test starting its own
#      PostgreSQL and redis-server on free loopback ports);
#   5. on failure prints regression.diffs and the tails of the failed TAP
#      tests' logs, keeps the directory and says where it is; on success
#      removes it.  Exits non-zero if anything failed.
#
# As another user: step 1 only checks (and warns about missing packages);
# step 2 installs only if that user may write to PostgreSQL's directories,
# otherwise it uses the copy already installed (run "make install" as root
# first); steps 3-5 run as that user, without runuser.
#
# Environment: PG_CONFIG (default PostgreSQL 15's), KEEP_TEST_DIR=1 keeps the
# directory on success too, PROVE_TESTS / PROVE_FLAGS / EXTRA_REGRESS_OPTS
# are passed on to make, PG_TEST_TIMEOUT_DEFAULT (default 30 s) bounds each
# wait of the TAP tests (PostgreSQL's own default is 180 s; here a worker
# that works lands entries in well under a second, and a test that waits in
# vain for a broken feature should not cost minutes per wait).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
srcdir=$(pwd)
is_root=no
[[ "$(id -u)" -eq 0 ]] && is_root=yes

say()
{
	printf '\n=== %s\n' "$*"
}

# 1. Packages
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
export PG_CONFIG

# 2. Build and install
say "build ($("$PG_CONFIG" --version))"
make --no-print-directory -j2 PG_CONFIG="$PG_CONFIG" </dev/null
make --no-print-directory PG_CONFIG="$PG_CONFIG" bench/loadgen </dev/null	# the simulator, for the tests and the demo

pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"
if [[ -w "$pkglibdir" && -w "$extdir" ]]; then
	say "install into $pkglibdir and $extdir"
	make --no-print-directory install PG_CONFIG="$PG_CONFIG" </dev/null >/dev/null
else
	say "skipping make install: $(id -un) cannot write to $pkglibdir"
	echo "The tests use the copy installed there; run 'make install' as root" \
		"after changing the sources."
	if [[ ! -f "$pkglibdir/processor.so" || ! -f "$extdir/processor.control" ]]; then
		echo "processor is not installed: run 'make install' as root" >&2
		exit 1
	fi
fi

# 3. A private copy of the tree for the test run ("postgres" must reach it:
# under /tmp when root, whatever TMPDIR says)
if [[ "$is_root" == yes ]]; then
	workdir=$(mktemp -d /tmp/processor-test.XXXXXX)
else
	workdir=$(mktemp -d "${TMPDIR:-/tmp}/processor-test.XXXXXX")
fi
tar -C "$srcdir" --exclude=./.git --exclude=./tmp_check \
	--exclude=./tmp_check_regress --exclude=./results -cf - . |
	tar -C "$workdir" -xf -
run_as=()
if [[ "$is_root" == yes ]]; then
	if ! id postgres >/dev/null 2>&1; then
		echo "user \"postgres\" does not exist (it comes with Debian's postgresql-15)" >&2
		exit 1
	fi
	chown -R postgres: "$workdir"
	run_as=(runuser -u postgres --)
fi

make_vars=(PG_CONFIG="$PG_CONFIG")
[[ -n "${PROVE_TESTS:-}" ]] && make_vars+=(PROVE_TESTS="$PROVE_TESTS")
[[ -n "${PROVE_FLAGS:-}" ]] && make_vars+=(PROVE_FLAGS="$PROVE_FLAGS")
[[ -n "${EXTRA_REGRESS_OPTS:-}" ]] && make_vars+=(EXTRA_REGRESS_OPTS="$EXTRA_REGRESS_OPTS")

run_in_workdir()
{
	(cd "$workdir" &&
		"${run_as[@]}" env \
			PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-30}" \
			make --no-print-directory "${make_vars[@]}" "$@" </dev/null)
}

# 4. The suites; both run whatever the first one gives (pipefail: a
# pipeline's status is make's, not tee's).
regress_status=0
say "pg_regress (temporary instance, test/regress.conf) in $workdir"
run_in_workdir regresscheck 2>&1 | tee "$workdir/regresscheck.out" ||
	regress_status=$?

tap_status=0
say "TAP tests (prove test/t/*.pl) in $workdir"
run_in_workdir tapcheck 2>&1 | tee "$workdir/tapcheck.out" || tap_status=$?

# The codec under libFuzzer: the hosted harness for FUZZ_TIME seconds
# (default 60), the standalone one for FUZZ_STANDALONE_TIME (30); skipped
# with FUZZ_TIME=0.
fuzz_status=0
if [[ "${FUZZ_TIME:-60}" != 0 ]]; then
	say "fuzzing the codec (make fuzzcheck, ${FUZZ_TIME:-60} s hosted," \
		"${FUZZ_STANDALONE_TIME:-30} s standalone) in $workdir"
	run_in_workdir fuzzcheck FUZZ_TIME="${FUZZ_TIME:-60}" \
		FUZZ_STANDALONE_TIME="${FUZZ_STANDALONE_TIME:-30}" 2>&1 |
		tee "$workdir/fuzzcheck.out" | tail -n 40 || fuzz_status=$?
fi

# 5. Report
regress_ok=$(grep -cE '\.\.\. ok( |$)' "$workdir/regresscheck.out" || true)
regress_failed=$(grep -cE '\.\.\. FAILED' "$workdir/regresscheck.out" || true)
if [[ $regress_status -ne 0 && $regress_failed -eq 0 ]]; then
	regress_failed=1			# pg_regress failed before running a test
fi
# make tapcheck runs one prove per script (each prints "Files=1, ...") and
# names the failed ones on a last line "TAP tests failed: t1 t2".
tap_files=$(grep -c '^Files=' "$workdir/tapcheck.out" || true)
tap_failed_list=$(sed -n 's/^TAP tests failed://p' "$workdir/tapcheck.out")
tap_failed=$(echo $tap_failed_list | wc -w)
if [[ $tap_status -ne 0 && $tap_failed -eq 0 ]]; then
	tap_failed=1				# make tapcheck failed before running a test
fi
if [[ $tap_files -lt $tap_failed ]]; then
	tap_files=$tap_failed
fi

if [[ $regress_status -ne 0 ]]; then
	say "pg_regress FAILED"
	if [[ -f "$workdir/regression.diffs" ]]; then
		echo "--- $workdir/regression.diffs (first 300 lines)"
		head -n 300 "$workdir/regression.diffs"
	fi
	# pg_regress writes its instance's logs to log/ of its output directory;
	# the server log without the statements that the tests logged.
	if [[ -f "$workdir/log/postmaster.log" ]]; then
		echo "--- tail of $workdir/log/postmaster.log (without pg_regress/ sessions)"
		grep -vF ' pg_regress/' "$workdir/log/postmaster.log" | tail -n 40 || true
	fi
	if [[ $regress_failed -gt 0 && ! -f "$workdir/regression.diffs" &&
		-f "$workdir/log/initdb.log" ]]; then
		echo "--- tail of $workdir/log/initdb.log"
		tail -n 20 "$workdir/log/initdb.log"
	fi
fi

if [[ $tap_status -ne 0 ]]; then
	say "TAP tests FAILED"
	# The server logs without the lines of the test's own sessions
	# (application_name = the script's name), which polling fills them with.
	for t in $tap_failed_list; do
		name=$(basename "$t" .pl)
		log="$workdir/tmp_check/log/regress_log_$name"
		if [[ -f "$log" ]]; then
			echo "--- tail of $log"
			tail -n 60 "$log"
		fi
		for log in "$workdir/tmp_check/log/${name}"_*.log; do
			if [[ "$log" == *_redis_*.log ]]; then
				echo "--- tail of $log"
				tail -n 15 "$log"
			elif [[ -f "$log" ]]; then
				echo "--- tail of $log (without $name.pl's statements)"
				grep -vF " $name.pl " "$log" | tail -n 40 || true
			fi
		done
	done
fi

if [[ $fuzz_status -ne 0 ]]; then
	say "fuzzing FAILED: see $workdir/fuzzcheck.out"
fi

if [[ $regress_status -ne 0 || $tap_status -ne 0 || $fuzz_status -ne 0 ]]; then
	say "logs kept in $workdir"
	echo "  pg_regress: $workdir/regression.diffs, $workdir/results/," \
		"$workdir/log/ (postmaster.log, initdb.log)"
	echo "  TAP:        $workdir/tmp_check/log/ (regress_log_<test>," \
		"<test>_<node>.log, <test>_redis_<port>.log)"
elif [[ "${KEEP_TEST_DIR:-0}" == 1 ]]; then
	say "logs kept in $workdir"
else
	rm -rf "$workdir"
fi

# One summary line, counting test files: pg_regress tests + TAP scripts.
fuzz_ran=0
[[ "${FUZZ_TIME:-60}" != 0 ]] && fuzz_ran=1
fuzz_failed=0
[[ $fuzz_status -ne 0 ]] && fuzz_failed=1
passed=$((regress_ok + tap_files - tap_failed + fuzz_ran - fuzz_failed))
failed=$((regress_failed + tap_failed + fuzz_failed))
echo
echo "processor: $passed passed, $failed failed"

[[ $regress_status -eq 0 && $tap_status -eq 0 && $fuzz_status -eq 0 ]]
