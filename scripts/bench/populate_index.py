#!/usr/bin/env python3
"""Fills a Spillway catalog (table `datasets`, see src/index/) with N rows.

Usage: populate_index.py INDEX_SQLITE ROWS

The node must have created the schema (start it once on an empty data dir)
and must be stopped. Rows are inserted in key order in one transaction:
keys `bench/0000000/file.bin`, ... (zero-padded to at least 7 digits), so
the key of row i is predictable for deep-page queries. No files are created:
the node's start-up reconcile will report them missing, which is expected.
A catalog with versions (tables `versions` and `blobs`, since the versions
change) gets each row as version 1 of its key with its blob row, as the node
writes them, so that it starts with nothing from before versions to adopt;
an older schema (BENCH_BASELINE's binary) gets the plain rows.
"""

import hashlib
import sqlite3
import sys


def key_width(rows: int) -> int:
    return max(7, len(str(max(rows - 1, 0))))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, rows = sys.argv[1], int(sys.argv[2])
    width = key_width(rows)
    conn = sqlite3.connect(path, isolation_level=None)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(datasets)")]
    expected = ["key", "name", "size", "blake3", "content_type", "created_at",
                "updated_at", "description", "tags", "version"]
    missing = [c for c in expected if c not in cols]
    if missing:
        print(f"populate: table `datasets` lacks columns {missing} (has {cols})",
              file=sys.stderr)
        return 1
    # Our own bulk load: durability of this connection does not matter.
    conn.execute("PRAGMA synchronous = OFF")

    def gen():
        for i in range(rows):
            digest = hashlib.blake2s(i.to_bytes(8, "little"), digest_size=32).hexdigest()
            ts = "2026-%02d-%02dT%02d:%02d:%02dZ" % (
                1 + i % 12, 1 + i % 28, i % 24, i % 60, (i // 60) % 60)
            yield (
                f"bench/{i:0{width}d}/file.bin",
                "file.bin",
                1024 + (i * 7919) % (64 << 20),
                digest,
                "application/octet-stream",
                ts,
                ts,
                None if i % 3 else f"benchmark row {i}",
                '["bench"]' if i % 2 else "[]",
                str(1_000_000 + i),
            )

    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    versioned = "versions" in tables and "blobs" in tables and "number" in cols
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO datasets (key, name, size, blake3, content_type, created_at,"
        " updated_at, description, tags, version) VALUES (?,?,?,?,?,?,?,?,?,?)",
        gen(),
    )
    if versioned:
        conn.execute("UPDATE datasets SET number = 1")
        conn.execute(
            "INSERT INTO versions (key, number, blake3, size, content_type, created_at)"
            " SELECT key, 1, blake3, size, content_type, created_at FROM datasets")
        conn.execute(
            "INSERT OR IGNORE INTO blobs (blake3, size, version)"
            " SELECT blake3, size, version FROM datasets")
    conn.execute("COMMIT")
    (count,) = conn.execute("SELECT count(*) FROM datasets").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
