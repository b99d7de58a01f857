"""Per-statement latency of the PostgreSQL listener against POST /api/v1/sql, same service.

Usage (a running `testlake serve --listen HOST:HTTP_PORT --pg-listen HOST:PG_PORT`):
    python benches/scripts/pg_vs_http.py HTTP_PORT PG_PORT [TOKEN]
Prints, per statement, the median of 10 runs after 2 warm-up runs on one psycopg connection
(autocommit: no BEGIN/COMMIT around each) and over HTTP, in milliseconds, and their ratio.
Needs psycopg (`deploy/scripts/setup.sh` installs it in ~/.cache/testlake/venv).
"""

import json
import statistics
import sys
import time
import urllib.request

import psycopg

STATEMENTS = ["SELECT 1", "SELECT count(*) FROM results"]
WARM_UP, RUNS = 2, 10


def median_ms(run):
    times = []
    for _ in range(WARM_UP + RUNS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times[WARM_UP:]) * 1000


def main():
    http_port, pg_port = int(sys.argv[1]), int(sys.argv[2])
    token = sys.argv[3] if len(sys.argv) > 3 else "none"
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    dsn = f"host=127.0.0.1 port={pg_port} user=bench password={token} dbname=testlake"
    with psycopg.connect(dsn, autocommit=True) as pg:
        for sql in STATEMENTS:
            over_pg = median_ms(lambda: pg.execute(sql).fetchall())
            body = json.dumps({"sql": sql}).encode()
            url = f"http://127.0.0.1:{http_port}/api/v1/sql"
            over_http = median_ms(lambda: urllib.request.urlopen(urllib.request.Request(url, body, headers)).read())
            print(f"{sql!r}: PostgreSQL {over_pg:.1f} ms, HTTP {over_http:.1f} ms, ratio {over_pg / over_http:.2f}")


if __name__ == "__main__":
    main()
