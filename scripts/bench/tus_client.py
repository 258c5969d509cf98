#!/usr/bin/env python3
"""One tus 1.0 upload, its requests spread round robin over nodes, for the
S3 section of scripts/bench.sh (issue 18: any node continues any upload).

Usage: tus_client.py blake3 FILE
       tus_client.py upload FILE KEY CHUNK_BYTES BLAKE3 BASE [BASE...]

  blake3  prints the file's blake3 (hex), or `-` without the blake3 module
  upload  POST /uploads (Upload-Length, Upload-Metadata `key`) to the first
          BASE, then PATCHes of CHUNK_BYTES (the last one what is left),
          request i (the POST is request 0) to BASE number i mod n: with two
          bases, POST on A, PATCH 1 on B, PATCH 2 on A, ...; with one, all
          on it. One keep-alive connection per base (http.client); each
          PATCH sends Content-Length and its bytes straight from the file
          with sendfile(2), so the client costs little CPU.

A node releases a PATCH's lease before its 204, so the next PATCH, through
any node, finds the upload free; should one still get `409 upload-in-use`
(or be cut off), it is retried as a real client would (tus-js-client does):
here a PATCH refused so, or cut off, is retried on the same node after a HEAD there
(which waits until the lease is free, and gives the offset), at most
MAX_RETRIES times an upload. Every retry is counted and printed.

On success, prints per request a line `REQ i node method offset bytes
seconds status`, then one line
  RESULT <seconds> <bytes> <client CPU s> <patches> <retries> <retry s> <etag>
timed from just before the POST to the last PATCH's answer (204, sent after
the node committed the dataset); <retry s>: the part of it spent in refused
PATCHes and the HEADs after them. Then, untimed, checks: the last PATCH's
ETag is the file's blake3 (unless BLAKE3 is `-`), and GET /datasets/KEY
through every base says the file's size and that blake3. Anything else is
an error (exit 1).
"""

import base64
import http.client
import json
import os
import sys
import time
from urllib.parse import urlsplit

MAX_RETRIES = 50
TIMEOUT_S = 300  # one socket operation; scripts/bench.sh bounds the whole run


class Failed(Exception):
    pass


def file_blake3(path: str) -> str:
    try:
        import blake3  # scripts/bench/requirements.txt
    except ImportError:
        return "-"
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    return h.hexdigest()


class Nodes:
    """One keep-alive connection per base URL, reopened after an error."""

    def __init__(self, bases):
        self.addrs = []
        for base in bases:
            u = urlsplit(base)
            if u.scheme != "http" or not u.hostname or not u.port:
                raise Failed(f"base {base!r}: expected http://HOST:PORT")
            self.addrs.append((u.hostname, u.port))
        self.conns = [None] * len(bases)

    def conn(self, i):
        if self.conns[i] is None:
            self.conns[i] = http.client.HTTPConnection(*self.addrs[i], timeout=TIMEOUT_S)
        return self.conns[i]

    def drop(self, i):
        if self.conns[i] is not None:
            self.conns[i].close()
            self.conns[i] = None

    def close(self):
        for i in range(len(self.conns)):
            self.drop(i)


def request(nodes, i, method, path, headers, body=None):
    """-> (status, headers dict lowercased, body bytes); body: (file, offset, count) or None."""
    c = nodes.conn(i)
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    c.endheaders()
    if body is not None:
        f, offset, count = body
        sent = c.sock.sendfile(f, offset, count)
        if sent != count:
            raise OSError(f"sendfile sent {sent} of {count} bytes")
    r = c.getresponse()
    data = r.read()
    if r.getheader("connection", "").lower() == "close":
        nodes.drop(i)
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def problem_code(data: bytes) -> str:
    try:
        return json.loads(data).get("code", "")
    except (ValueError, AttributeError):
        return ""


def upload(path, key, chunk, expected, bases):
    size = os.path.getsize(path)
    nodes = Nodes(bases)
    n = len(bases)
    names = [chr(65 + j) for j in range(n)]
    log = []  # (i, node, method, offset, bytes, seconds, status)
    tus = {"Tus-Resumable": "1.0.0"}
    retries, retry_s = 0, 0.0
    meta = "key " + base64.b64encode(key.encode()).decode()
    with open(path, "rb") as f:
        t0, c0 = time.perf_counter(), time.process_time()
        s = time.perf_counter()
        status, hdrs, data = request(
            nodes, 0, "POST", "/uploads",
            {**tus, "Upload-Length": str(size), "Upload-Metadata": meta, "Content-Length": "0"})
        log.append((0, names[0], "POST", 0, 0, time.perf_counter() - s, status))
        if status != 201 or "location" not in hdrs:
            raise Failed(f"POST /uploads through {names[0]}: {status} {data[:300]!r}")
        upath = urlsplit(hdrs["location"]).path
        offset, req, patches, etag = 0, 1, 0, ""
        while offset < size:
            i = req % n
            count = min(chunk, size - offset)
            s = time.perf_counter()
            try:
                status, hdrs, data = request(
                    nodes, i, "PATCH", upath,
                    {**tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                     "Content-Length": str(count)},
                    (f, offset, count))
                why = None if status == 204 else f"{status} {problem_code(data) or data[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                nodes.drop(i)
                status, why = 0, f"{type(e).__name__}: {e}"
            took = time.perf_counter() - s
            log.append((req, names[i], "PATCH", offset, count, took, status))
            if why is None:
                got = int(hdrs.get("upload-offset", "-1"))
                if got != offset + count:
                    raise Failed(f"PATCH {req} through {names[i]}: Upload-Offset {got}, expected {offset + count}")
                offset, patches, req = got, patches + 1, req + 1
                etag = hdrs.get("etag", "")
                continue
            # Retry on the same node: a refusal because the lease was still
            # held, or a cut connection; anything else is a failure.
            if status not in (0, 409) or (status == 409 and problem_code(data) != "upload-in-use"):
                raise Failed(f"PATCH {req} through {names[i]} at {offset}: {why}")
            retries, retry_s = retries + 1, retry_s + took
            if retries > MAX_RETRIES:
                raise Failed(f"PATCH {req} through {names[i]}: more than {MAX_RETRIES} retries, last: {why}")
            print(f"RETRY {retries} PATCH {req} through {names[i]} at {offset}: {why}", file=sys.stderr, flush=True)
            s = time.perf_counter()
            try:
                status, hdrs, data = request(nodes, i, "HEAD", upath, tus)
            except (OSError, http.client.HTTPException) as e:
                nodes.drop(i)
                raise Failed(f"HEAD through {names[i]} after a failed PATCH: {type(e).__name__}: {e}") from None
            took = time.perf_counter() - s
            retry_s += took
            log.append((req, names[i], "HEAD", offset, 0, took, status))
            if status != 200:
                raise Failed(f"HEAD through {names[i]}: {status}")
            offset = int(hdrs.get("upload-offset", "-1"))
            if not 0 <= offset <= size:
                raise Failed(f"HEAD through {names[i]}: Upload-Offset {offset}")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0

    for r in log:
        print("REQ %d %s %s %d %d %.6f %d" % r, flush=True)
    print(f"RESULT {seconds:.6f} {size} {cpu:.2f} {patches} {retries} {retry_s:.3f} {etag or '-'}", flush=True)

    # Untimed checks.
    if expected != "-" and etag != f'"{expected}"':
        raise Failed(f"the last PATCH's ETag is {etag!r}, expected the file's blake3 \"{expected}\"")
    for i in range(n):
        status, _, data = request(nodes, i, "GET", "/datasets/" + key, {})
        if status != 200:
            raise Failed(f"GET /datasets/{key} through {names[i]}: {status} {data[:300]!r}")
        record = json.loads(data)
        if record.get("size") != size:
            raise Failed(f"through {names[i]}: the dataset is {record.get('size')} bytes, the file {size}")
        if expected != "-" and record.get("blake3") != expected:
            raise Failed(f"through {names[i]}: the dataset's blake3 is {record.get('blake3')}, the file's {expected}")
    nodes.close()


def main() -> int:
    args = sys.argv[1:]
    try:
        if len(args) == 2 and args[0] == "blake3":
            print(file_blake3(args[1]))
            return 0
        if len(args) >= 6 and args[0] == "upload":
            path, key, chunk, expected, bases = args[1], args[2], int(args[3]), args[4], args[5:]
            if chunk <= 0:
                raise Failed("CHUNK_BYTES must be > 0")
            upload(path, key, chunk, expected, bases)
            return 0
    except Failed as e:
        print(f"tus_client: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
