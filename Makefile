# Makefile for processor (PGXS)
#
#   make                 build processor.so
#   make install         install it into the server of $(PG_CONFIG) (root)
#   make installcheck    pg_regress against a running server (PGXS standard;
#                        it must preload processor with the worker paused,
#                        as test/regress.conf does)
#   make test            every test, from a fresh Debian 12 as root:
#                        test/run-tests.sh (deps, build, install, pg_regress
#                        on a temporary instance, TAP tests)
#   make regresscheck    pg_regress on a temporary instance (no server needed;
#                        the extension must be installed)
#   make tapcheck        the TAP tests in test/t/ (extension installed,
#                        redis-server on PATH)
#   make demo            scripts/demo.sh
#   make bench           bench/bench.sh: drain rate, in-database ceiling,
#                        latency and CPU per entry on a throwaway setup (root)

MODULE_big = processor
OBJS = \
	src/processor.o \
	src/worker.o \
	src/session.o \
	src/session_ownership.o \
	src/batch.o \
	src/redis.o \
	src/redis_commands.o \
	src/stream.o \
	src/codec.o \
	src/codec_json.o \
	src/codec_attrs.o \
	src/codec_text.o \
	src/codec_build.o \
	src/state.o \
	src/stats.o \
	src/tables.o \
	src/writer.o \
	src/writer_isolation.o \
	src/funcs.o \
	src/funcs_monitor.o \
	src/replay.o
PGFILEDESC = "processor - Redis Stream consumer for GPS positions"

EXTENSION = processor
DATA = sql/processor--1.0.sql
# PGXS's clean already removes results/, regression.*, tmp_check/, log/.
EXTRA_CLEAN = tmp_check_regress tmp_check_fuzz bench/loadgen

# pg_regress tests: sql/NAME.sql, expected/NAME.out, run in this order in
# one database (contrib_regression).  The first creates the extension; the
# others use CREATE EXTENSION IF NOT EXISTS so that each can run alone
# (make regresscheck REGRESS=monitor).
REGRESS = decode monitor guc
# UTF8: the extension requires it (SPEC), and expected outputs hold
# non-ASCII text.  PGXS appends --dbname=contrib_regression.
REGRESS_OPTS = --inputdir=. --encoding=UTF8

SHLIB_LINK += -lhiredis

# -Wextra, minus the one warning that PostgreSQL 15's own headers trip:
# -Wunused-parameter fires on inline functions in lib/ilist.h and
# storage/bufpage.h, and on every PG_FUNCTION_ARGS or hook signature that
# ignores an argument.  Everything else -Wextra adds stays on; checked with
# gcc 12 against every server header the sources use.  In particular
# -Wmissing-field-initializers does not fire on "= {0}" or on designated
# initializers, only on a positional initializer that forgets a field,
# and -Wclobbered flags locals that need "volatile" around PG_TRY/sigsetjmp.
PG_CPPFLAGS += -Wextra -Wno-unused-parameter

PG_CONFIG ?= pg_config
# PGXS's Makefile.global empties PROVE_FLAGS; keep one from the environment
# (PROVE_FLAGS=--verbose make test), as one from the command line is kept.
processor_prove_flags := $(PROVE_FLAGS)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
PROVE_FLAGS := $(processor_prove_flags)

# Debian's PGXS does not track header dependencies: every object depends on
# the shared headers, so that a changed struct never leaves a stale object.
# (After the include: a rule before it would become the default goal.)
$(OBJS): $(wildcard src/*.h)

# ---------------------------------------------------------------------------
# Tests beyond PGXS's installcheck.  Both run against the *installed*
# extension (PGXS has no "make check" for extensions) and must run as a user
# that PostgreSQL accepts (not root); "make test" arranges all of that.
# ---------------------------------------------------------------------------

# Settings for the temporary instance of regresscheck: preloads processor
# with the worker paused (see the file).
REGRESS_TEMP_CONFIG = test/regress.conf

# TAP tests: test/t/NNN_name.pl, sequential.  PROVE_TESTS picks some
# (make tapcheck PROVE_TESTS=test/t/001_smoke.pl) and PROVE_FLAGS adds prove
# options (PROVE_FLAGS=--verbose), on the command line or in the
# environment, for make test too.
PROVE_TESTS ?= test/t/*.pl

.PHONY: test regresscheck tapcheck demo

test:
	bash test/run-tests.sh

# pg_regress on a throwaway instance in ./tmp_check_regress, created with
# the installed binaries.  C.UTF-8 (built into Debian 12's glibc) makes the
# instance's databases UTF8 whatever the caller's locale is.
regresscheck:
	rm -rf '$(CURDIR)'/tmp_check_regress
	LANG=C.UTF-8 LC_ALL=C.UTF-8 \
	$(pgxsdir)/src/test/regress/pg_regress \
		--temp-instance='$(CURDIR)'/tmp_check_regress \
		--temp-config=$(REGRESS_TEMP_CONFIG) \
		--bindir='$(bindir)' \
		$(REGRESS_OPTS) $(EXTRA_REGRESS_OPTS) $(REGRESS)

# The TAP tests, with the environment that PGXS's prove_installcheck gives
# (TESTDIR, PG_REGRESS, the server's bindir first on PATH, the TAP modules
# on @INC) plus test/ for our helpers.  Written out rather than using
# $(prove_installcheck) because that silently becomes an echo when the
# server was built without --enable-tap-tests.  One prove per script:
# PostgreSQL::Test::Cluster bails out (which stops prove altogether) when a
# node it stops has crashed, and one crash must not hide the other results.
tapcheck:
	rm -rf '$(CURDIR)'/tmp_check
	mkdir -p '$(CURDIR)'/tmp_check
	@failed=; \
	for t in $(PROVE_TESTS); do \
		TESTDIR='$(CURDIR)' PATH="$(bindir):$$PATH" \
		PG_REGRESS='$(pgxsdir)/src/test/regress/pg_regress' \
		$(PROVE) -I '$(pgxsdir)/src/test/perl' -I '$(CURDIR)/test' \
			--timer $(PROVE_FLAGS) "$$t" || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "TAP tests failed:$$failed"; exit 1; fi

demo:
	bash scripts/demo.sh

# The benchmark (SPEC §8; root on Debian 12, like make test) and its load
# generator.  .PHONY: the directory bench/ would otherwise be up to date.
.PHONY: bench

bench:
	bash bench/bench.sh

bench/loadgen: bench/loadgen.c
	$(CC) -O2 -Wall -Wextra -o $@ $< -lhiredis -lm

# ---------------------------------------------------------------------------
# Fuzzing the codec (test/fuzz/run.sh), with libFuzzer (Debian clang-14
# and libclang-rt-14-dev; AddressSanitizer and UBSan), two harnesses:
# hosted in a single-user backend, so that the codec runs against the
# server's own JSON, number, date and jsonb code (as a user PostgreSQL
# accepts, not root); and standalone, the codec's parsing and validation
# core alone behind src/codec_build.h, one executable.  fuzzcheck (part of
# make test): FUZZ_TIME seconds hosted (60), FUZZ_STANDALONE_TIME
# standalone (30); 0 skips one.  fuzz: FUZZ_LONG_TIME seconds each (an
# hour).
# ---------------------------------------------------------------------------
FUZZ_TIME ?= 60
FUZZ_STANDALONE_TIME ?= 30
FUZZ_LONG_TIME ?= 3600

.PHONY: fuzz fuzzcheck

fuzzcheck:
ifneq ($(FUZZ_TIME),0)
	PG_CONFIG='$(PG_CONFIG)' bash test/fuzz/run.sh $(FUZZ_TIME)
endif
ifneq ($(FUZZ_STANDALONE_TIME),0)
	PG_CONFIG='$(PG_CONFIG)' bash test/fuzz/run.sh standalone $(FUZZ_STANDALONE_TIME)
endif

fuzz:
	PG_CONFIG='$(PG_CONFIG)' bash test/fuzz/run.sh $(FUZZ_LONG_TIME)
	PG_CONFIG='$(PG_CONFIG)' bash test/fuzz/run.sh standalone $(FUZZ_LONG_TIME)
