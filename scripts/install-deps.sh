#!/usr/bin/env bash
#
# install-deps.sh: install the Debian 12 packages that building, testing and
# the demo need, and only those that are missing.
#
#   scripts/install-deps.sh            as root: install what is missing
#   scripts/install-deps.sh --check    any user: list what is missing, warn,
#                                      exit 0 (the caller carries on)
#
# Idempotent and quiet when everything is there: dpkg-query decides, and
# apt-get (update included) runs only when something is missing.  Package
# scripts are not allowed to start services (no PostgreSQL on 5432, no Redis
# on 6379): the tests start their own servers on free ports.

set -euo pipefail

PACKAGES=(
	postgresql-15             # server, initdb, pg_ctl, psql
	postgresql-server-dev-15  # PGXS, headers, pg_regress, TAP modules
	libhiredis-dev            # hiredis 0.14
	redis-server              # Redis 7.0 for tests and the demo
	redis-tools               # redis-cli
	libipc-run-perl           # IPC::Run, required by PostgreSQL::Test::Cluster
	perl                      # prove, Test::More
	make
	gcc
	libc6-dev
	procps                    # ps, for diagnostics
	stunnel4                  # the TLS recipe (test/t/180_stunnel_tls.pl)
	openssl                   # its test certificates
	clang-14                  # the codec's fuzz harness (test/fuzz/run.sh)
	libclang-rt-14-dev        # libFuzzer and the ASan/UBSan runtimes
	prometheus-postgres-exporter  # monitoring/ (test/t/195_prometheus_exporter.pl)
	prometheus                # promtool, checks monitoring/alerts.yaml
)

check_only=no
if [[ "${1:-}" == "--check" ]]; then
	check_only=yes
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "install-deps: not a Debian system; install the equivalents of:" \
		"${PACKAGES[*]}" >&2
	exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	if [[ "$status" != "install ok installed" ]]; then
		missing+=("$pkg")
	fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ "$check_only" == yes || "$(id -u)" -ne 0 ]]; then
	echo "install-deps: missing Debian packages: ${missing[*]}" >&2
	echo "install-deps: as root: apt-get install -y ${missing[*]}" >&2
	if [[ "$check_only" == yes ]]; then
		exit 0
	fi
	exit 1
fi

echo "install-deps: installing ${missing[*]}"

# Keep package scripts from starting services while we install, unless the
# system already has a policy (Docker images ship one that does the same).
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -qq update </dev/null
apt-get -qq install -y --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}" </dev/null >/dev/null
echo "install-deps: done"
