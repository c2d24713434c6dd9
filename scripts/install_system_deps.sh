#!/usr/bin/env bash
# Install the Debian packages the tests and the product use, when running as root.
# Without root, report what is missing; tests that need a missing program fail in CI.
set -euo pipefail
want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
need redis-server redis-server
need promtool prometheus
need prometheus prometheus
need amtool prometheus-alertmanager
need prometheus-alertmanager prometheus-alertmanager
need chromium chromium
need docker-compose docker-compose
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
[ -d /usr/share/games/fortunes ] || want+=(fortunes fortunes-min)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  # the packages start system services we do not use
  for s in redis-server prometheus prometheus-alertmanager postgresql; do
    service "$s" stop >/dev/null 2>&1 || true
  done
else
  echo "missing (install as root): ${want[*]}" >&2
fi
