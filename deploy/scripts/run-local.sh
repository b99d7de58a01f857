#!/usr/bin/env bash
# The whole pipeline on this machine: a tansu broker on 127.0.0.1, the all-in-one testlake
# process on a local-filesystem lake, and the synthetic CI fleet feeding it. Ctrl-C stops it all.
#
# Environment: TESTLAKE_BROKER_PORT (19092), TESTLAKE_LISTEN (127.0.0.1:8080), TESTLAKE_PG_LISTEN
# (127.0.0.1:5433, the PostgreSQL protocol),
# TESTLAKE_FLEET_RATE (events/s, 200), TESTLAKE_LAKE (.local/lake), PROFILE (release, the
# default: testlake at its real speed — a day's trends recompute takes tens of seconds in a debug
# build; the first release build takes 15-25 minutes on 2 cores. PROFILE=dev builds sooner.)
# TESTLAKE_CONFIG names a configuration file (deploy/config/development.toml, for one).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

port="${TESTLAKE_BROKER_PORT:-19092}"
listen="${TESTLAKE_LISTEN:-127.0.0.1:8080}"
export TESTLAKE_PG_LISTEN="${TESTLAKE_PG_LISTEN:-127.0.0.1:5433}"
profile="${PROFILE:-release}"
export TESTLAKE_LAKE="${TESTLAKE_LAKE:-$PWD/.local/lake}"
mkdir -p .local

cargo build --profile "$profile" -p testlake
bin="target/$([ "$profile" = dev ] && echo debug || echo "$profile")/testlake"

broker=""
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  (cd .local && exec tansu broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >tansu.log 2>&1) &
  broker=$!
  trap '[ -n "$broker" ] && kill "$broker" 2>/dev/null' EXIT
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fi

cat <<TXT

testlake is starting: broker 127.0.0.1:$port, lake $TESTLAKE_LAKE
  dashboard page     http://$listen/
  dashboard summary  http://$listen/api/v1/dashboard
  hourly trends      http://$listen/api/v1/trends?interval=hourly
  daily trends       http://$listen/api/v1/trends?interval=daily
  metrics            http://$listen/metrics
  SQL over psql      psql "host=${TESTLAKE_PG_LISTEN%:*} port=${TESTLAKE_PG_LISTEN##*:} user=analyst dbname=testlake"
  the lake in DuckDB SELECT * FROM read_parquet('$TESTLAKE_LAKE/results/**/*.parquet', hive_partitioning=true);

TXT
"$bin" all --brokers "127.0.0.1:$port" --listen "$listen" --fleet-rate "${TESTLAKE_FLEET_RATE:-200}"
