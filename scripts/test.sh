#!/usr/bin/env bash
# Run the whole test suite against real servers started here and stopped at exit.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system_deps.sh
dir=$(mktemp -d /tmp/collapsewatch-test.XXXXXX)
cleanup() { bash scripts/servers.sh stop "$dir"; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
bash scripts/servers.sh start "$dir" || { echo "could not start test servers" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dir/env"
export COLLAPSEWATCH_TEST_REQUIRE_SERVERS=1
# test files run in parallel (pytest-xdist, one file per worker at a time, so a module's
# fixtures are built once): one worker per core, at most 4; COLLAPSEWATCH_TEST_WORKERS=0 runs
# everything in this process
workers=${COLLAPSEWATCH_TEST_WORKERS:-$(n=$(nproc); echo $((n < 4 ? n : 4)))}
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; rc=1; fi
exit $rc
