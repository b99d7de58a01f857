#!/usr/bin/env bash
# Installs what testlake needs on a fresh Debian/Ubuntu machine. Idempotent: every step is
# skipped when what it installs is already there.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

# C toolchain, zlib and OpenSSL for librdkafka's bundled build (rdkafka-sys, with TLS and SASL),
# curl for rustup; chromium and its WebDriver for the dashboard page's headless-browser test;
# Python's venv for the PyPI tools below; openssl and stunnel for the secured-Kafka tests (a
# test CA, and TLS in front of the broker); docker-compose (1.29), whose `config` checks
# deploy/compose.yaml without a Docker daemon, and prometheus (2.42, with promtool) for the
# monitoring tests, which start their own Prometheus on a free port (on a machine with systemd
# the package also starts Debian's own on :9090, and its recommended node exporter on :9100);
# postgresql-client for psql, a client of the PostgreSQL-protocol tests.
packages=(build-essential pkg-config zlib1g-dev libssl-dev openssl stunnel4 curl ca-certificates chromium
  chromium-driver python3-venv docker-compose prometheus postgresql-client)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing apt packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    log "installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# The Kafka-protocol broker used for development and tests. dynostore gives memory://,
# libsql gives sqlite:// (survives restarts). About ten minutes to build the first time.
if ! command -v tansu >/dev/null 2>&1; then
  log "installing the tansu broker (cargo install tansu --locked --features dynostore,libsql)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi

# The file-backed S3 server of the object-store tests (sequential protocol tests; the race tests
# use moto, below, whose conditional writes are atomic). It checks credentials. 0.14.1: newer
# versions need a newer Rust. About four minutes to build the first time (measured on 2 cores).
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "installing the s3s-fs S3 server (cargo install s3s-fs --version 0.14.1 --features binary --locked)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# PyPI tools, in their own virtual environment (never the system's Python): schemathesis, which
# tests/tests/schemathesis.rs runs against the service's OpenAPI document; confluent-kafka, the
# outside Kafka client of the secured-Kafka tests, and scramp, the SCRAM implementation of their
# authenticating stand-in; moto, the S3 server of the object-store tests; kubernetes-validate,
# which checks deploy/k8s/ against the Kubernetes schemas it bundles (offline); deltalake and
# polars, the independent reader of the Delta table (tests/scripts/read_delta.py); psycopg, a
# client of the PostgreSQL-protocol tests (tests/scripts/pg_client.py). The tests look for them at
# $TESTLAKE_VENV/bin (default below).
venv="${TESTLAKE_VENV:-$HOME/.cache/testlake/venv}"
pypi=(schemathesis==4.32.5 confluent-kafka==2.16.1 scramp==1.5.0 "moto[server]==5.2.5" kubernetes-validate==1.37.0
  deltalake==1.6.6 polars==1.44.2 "psycopg[binary]==3.3.9")
[ -x "$venv/bin/python" ] || { log "creating the Python environment $venv"; python3 -m venv "$venv"; }
for spec in "${pypi[@]}"; do
  name="${spec%%==*}"
  if ! "$venv/bin/python" -m pip show "${name%%[*}" 2>/dev/null | grep -x "Version: ${spec##*==}" >/dev/null; then
    log "installing $spec into $venv"
    "$venv/bin/python" -m pip install -q "$spec"
  fi
done

log "ready: $(tansu --version 2>/dev/null | head -n1), $(cargo --version)"
