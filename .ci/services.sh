#!/usr/bin/env bash
# System services the tests need, for a fresh Debian/Ubuntu CI machine. Run as root (or with sudo)
# before the tests; idempotent, and a no-op in well under a second when everything is there.
#
#   PostgreSQL server binaries (initdb, pg_ctl) for tests/test_server.py, which starts its own
#   throwaway cluster on a free port as the `postgres` user and stops it again. Nothing is started
#   here; the package's default cluster on port 5432, if the package starts one, is not used.
set -euo pipefail

have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_postgres && id postgres >/dev/null 2>&1; then
  echo "services: PostgreSQL server binaries present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "services: PostgreSQL is missing; run this script as root: sudo bash .ci/services.sh" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "services: no apt-get here; install the PostgreSQL server (initdb, pg_ctl) with your package manager" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# the server, its client and contrib (the metapackage wants them); no recommended extras
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_postgres
echo "services: installed $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
