#!/usr/bin/env bash
# The one test command (README, CI via .ci/run). On a fresh Debian 12 machine, as root, with no prior
# set-up, it installs what the tests need, starts PostgreSQL 15, prepares the Python peers, then runs
# every test, clippy and rustfmt. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

# Debian packages the tests use, one per line (later issues add Orthanc, dcmtk, ... here).
APT_PACKAGES=(
  postgresql-15          # store contract tests and the PostgreSQL engine
  postgresql-client-15   # psql: the harness creates one database per test broker
  python3-venv           # the Python test peers live in a venv
  dicom3tools            # dciodvfy: validates every KOS manifest we build (hie-kos tests)
  dcmtk                  # dsrdump/dcmdump, and the DIMSE peers: echoscu storescu findscu getscu movescu storescp dcmqrscp
  orthanc                # the local PACS peer: C-FIND/C-GET/C-MOVE/C-STORE
  orthanc-dicomweb       # Orthanc's QIDO-RS/WADO-RS plugin
  libxml2-utils          # xmllint: every SOAP message we send or answer is validated against the XDS schemas
  curl                   # an HTTPS client nobody here wrote (mTLS tests)
  sslscan                # scans the HTTPS listener's protocols and cipher suites
  stunnel4               # B-RAD69: a TLS terminator in front of Orthanc, the floor of what TLS costs
)
# Python peers (real clients nobody here wrote), pinned to the versions checked in real-peers.md.
PIP_PACKAGES=(hl7==0.4.5 hl7apy==1.3.5 zeep==4.3.3 pydicom==3.0.2 pynetdicom==3.0.4)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root (or sudo) for: $*"; fi
}
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

say "Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all present: ${APT_PACKAGES[*]}"
fi

say "PostgreSQL 15"
if ! pg_lsclusters -h 2>/dev/null | awk '$1==15 && $2=="main"' | grep -q .; then
  as_root pg_createcluster 15 main
fi
if ! pg_lsclusters -h | awk '$1==15 && $2=="main" {print $4}' | grep -q online; then
  as_root pg_ctlcluster 15 main start
fi
for _ in $(seq 1 600); do
  pg_isready -h 127.0.0.1 -p 5432 -q && break
  sleep 0.1
done
pg_isready -h 127.0.0.1 -p 5432 -q || die "PostgreSQL 15 did not become ready on 127.0.0.1:5432 (see /var/log/postgresql/)"
if [ "$(as_postgres psql -XtAc "SELECT 1 FROM pg_roles WHERE rolname = 'hie'")" != "1" ]; then
  echo "creating role hie"
  as_postgres psql -X -v ON_ERROR_STOP=1 -qc "CREATE ROLE hie LOGIN CREATEDB PASSWORD 'hie'"
fi
export HIE_TEST_PG_ADMIN_URL="${HIE_TEST_PG_ADMIN_URL:-postgres://hie:hie@127.0.0.1:5432/postgres}"
PGURL_DB="hie_test"
if [ "$(psql "$HIE_TEST_PG_ADMIN_URL" -XtAc "SELECT 1 FROM pg_database WHERE datname = '$PGURL_DB'")" != "1" ]; then
  psql "$HIE_TEST_PG_ADMIN_URL" -X -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PGURL_DB"
fi
export HIE_TEST_PG_URL="${HIE_TEST_PG_URL:-postgres://hie:hie@127.0.0.1:5432/$PGURL_DB}"
# Contract tests create one throw-away database each (hie_test_<hex>); drop those of earlier runs.
stale=$(psql "$HIE_TEST_PG_ADMIN_URL" -XtAc "SELECT datname FROM pg_database WHERE datname ~ '^hie_test_[0-9a-f]+$'")
for db in $stale; do psql "$HIE_TEST_PG_ADMIN_URL" -X -qc "DROP DATABASE IF EXISTS $db" >/dev/null || true; done
[ -z "$stale" ] || echo "dropped $(echo "$stale" | wc -w) stale test databases"
echo "ready: HIE_TEST_PG_ADMIN_URL=$HIE_TEST_PG_ADMIN_URL HIE_TEST_PG_URL=$HIE_TEST_PG_URL"

say "Python test peers"
export HIE_TEST_VENV="${HIE_TEST_VENV:-$ROOT/.venv}"
if ! "$HIE_TEST_VENV/bin/python" -c 'import hl7, hl7apy, zeep, pydicom, pynetdicom' 2>/dev/null \
   || [ ! -x "$HIE_TEST_VENV/bin/mllp_send" ]; then
  python3 -m venv "$HIE_TEST_VENV"
  "$HIE_TEST_VENV/bin/pip" install --no-cache-dir -q "${PIP_PACKAGES[@]}"
fi
echo "ready: $HIE_TEST_VENV ($("$HIE_TEST_VENV/bin/pip" list 2>/dev/null | grep -iE '^(hl7|hl7apy|zeep|pydicom|pynetdicom) ' | tr -s ' ' | paste -sd, -))"

say "Rust toolchain"
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup: https://rustup.rs)"
cargo --version

say "cargo test --workspace --locked"
cargo test --workspace --locked

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo fmt --all -- --check"
cargo fmt --all -- --check
