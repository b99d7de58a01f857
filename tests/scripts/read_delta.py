"""An independent reader of testlake's Delta table: the PyPI `deltalake` (the table's log) and
`polars` (its files), nothing of testlake's own code.

    read_delta.py TABLE_URI all            every version the log has, oldest first
    read_delta.py TABLE_URI newest         the newest version, with its event ids
    read_delta.py TABLE_URI sum COLUMN     the newest version's sum of COLUMN per date (a computed
                                           table's), as {"version", "sums": {date: sum}}
    read_delta.py TABLE_URI follow STOP    each new version as it appears, until the file STOP
                                           exists (then once more): files a compaction replaced
                                           are deleted after its grace, so versions are read
                                           while they are current

Prints one JSON object per version read: {"version", "operation", "files", "rows", "distinct"}
(and "ids" for `newest`), or {"version", "error"} when a version cannot be read (in `all` and
`follow`: a version whose files a later compaction deleted). S3 settings come from the AWS_*
environment variables, as testlake's.
"""

import json
import os
import sys
import time

import polars as pl
from deltalake import DeltaTable


def storage_options():
    options = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def read(uri, version, with_ids=False):
    table = DeltaTable(uri, version=version, storage_options=storage_options())
    operation = (table.history(1) or [{}])[0].get("operation")
    files = table.file_uris()
    ids = pl.read_delta(uri, version=version, columns=["event_id"], storage_options=storage_options())["event_id"]
    out = {
        "version": version,
        "operation": operation,
        "files": len(files),
        "rows": len(ids),
        "distinct": ids.n_unique(),
    }
    if with_ids:
        out["ids"] = sorted(ids.to_list())
    print(json.dumps(out), flush=True)


def try_read(uri, version):
    try:
        read(uri, version)
    except Exception as e:  # reported, judged by the test
        print(json.dumps({"version": version, "error": str(e)[:500]}), flush=True)


def newest(uri):
    return DeltaTable(uri, storage_options=storage_options()).version()


def main():
    uri, mode = sys.argv[1], sys.argv[2]
    if mode == "all":
        for version in range(0, newest(uri) + 1):
            try_read(uri, version)
    elif mode == "newest":
        read(uri, newest(uri), with_ids=True)
    elif mode == "sum":
        column, version = sys.argv[3], newest(uri)
        frame = pl.read_delta(uri, version=version, columns=["date", column], storage_options=storage_options())
        sums = frame.group_by("date").agg(pl.col(column).sum())
        out = {str(date): int(total) for date, total in sums.iter_rows()}
        print(json.dumps({"version": version, "sums": out}), flush=True)
    elif mode == "follow":
        stop, last, deadline = sys.argv[3], -1, time.monotonic() + 600
        while time.monotonic() < deadline:
            stopping = os.path.exists(stop)
            try:
                current = newest(uri)
            except Exception:  # no table yet
                current = -1
            if current > last:
                try_read(uri, current)
                last = current
            if stopping:
                break
            time.sleep(0.05)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
