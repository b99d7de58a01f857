"""A PostgreSQL client of testlake's wire protocol, as an analyst's script would be: psycopg 3
with its defaults (server-side parameter binding over the extended protocol, every statement in
a transaction it opens with BEGIN).

Reads {"conninfo": "...", "statements": [{"sql": "...", "params": [...] or null}, ...]} on
stdin; writes one JSON line per statement: {"columns": [...], "rows": [[...], ...]} or
{"sqlstate": "...", "error": "..."} (after which the transaction is rolled back, as a client
would). Values are JSON's own where they can be, else their text.
"""

import datetime
import decimal
import json
import sys

import psycopg


def plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def main():
    spec = json.load(sys.stdin)
    with psycopg.connect(spec["conninfo"]) as conn:
        for statement in spec["statements"]:
            try:
                with conn.cursor() as cur:
                    cur.execute(statement["sql"], statement.get("params"))
                    columns = [c.name for c in cur.description or []]
                    rows = [[plain(v) for v in row] for row in cur.fetchall()] if cur.description else []
                conn.commit()
                print(json.dumps({"columns": columns, "rows": rows}), flush=True)
            except psycopg.Error as e:
                conn.rollback()
                print(json.dumps({"sqlstate": e.sqlstate, "error": str(e)}), flush=True)


if __name__ == "__main__":
    main()
