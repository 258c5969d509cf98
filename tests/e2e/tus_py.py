#!/usr/bin/env python3
"""End-to-end tests of Spillway's tus server with the real tuspy client.

Run by scripts/e2e.sh, each scenario against a fresh node:

  tus_py.py resume    --base URL --work DIR --data-dir DIR [--size-mib 200] [--chunk-mib 5]
  tus_py.py checksums --base URL --work DIR --data-dir DIR
  tus_py.py expire    --base URL --work DIR --data-dir DIR [--expiry 2]
  tus_py.py takeover  --base URL --work DIR --data-dir DIR
  tus_py.py cluster   --bases URL,URL[,...] --work DIR [--size-mib 24]

`resume`: a generated file is uploaded by tuspy in chunks with checksums; the
client process is SIGKILLed midway (once the server's HEAD shows an offset),
then a NEW client process finds the upload URL in tuspy's URL storage and
finishes it. The dataset must be listed with the right blake3 and download
byte-identical.

`checksums`: tuspy's Upload-Checksum with each algorithm the server offers
(sha1 is tuspy's default; md5 and sha256 through the class attribute
CHECKSUM_ALGORITHM_PAIR that tuspy reads), a `filename` key, and a chunk
whose checksum is wrong: 460, offset unchanged, then the upload resumes.

`takeover`: a hand-made PATCH sends part of its body and then hangs with
the connection open (a client gone silent); a new tuspy client must take the
upload over at once (not after the stall timeout) and finish it. With
--strict-takeover its first PATCH (at the offset its HEAD saw) must succeed;
without, a 409 there is printed as a KNOWN ISSUE and a second client goes on.

`expire`: against a node with a short upload_expiry, tuspy sends part of an
upload (Uploader.upload(stop_at=...)); the sweeper must then remove it: HEAD
404/410, the bytes under <data-dir>/uploads/ gone, and tuspy cannot resume.

`cluster` (run by scripts/e2e-cluster.sh, against nodes sharing one S3
bucket and one PostgreSQL index): tuspy talks to a round-robin proxy in this
script that sends every request to the next node, with no affinity (each
request on its own connection, `Connection: close` added). One upload in
PATCHes of varied sizes (every other one to the node that did not create
it), a new client resuming it midway (its HEAD on yet another node), no
retries allowed; then the dataset is checked on every node directly.

The tus protocol is spoken by tuspy only; this script uses `requests` for
the checks (HEAD of the upload, the catalog, the download) and `blake3`.
Every wait is bounded. Exit status 0 means every check passed.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import blake3
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

MiB = 1 << 20
HTTP_TIMEOUT = 30


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def say(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------- helpers --


def generate(path, size, seed_tag):
    """Writes `size` random bytes to `path`; returns their blake3 (hex)."""
    h = blake3.blake3()
    left = size
    with open(path, "wb") as f:
        # A distinct first block per file, so tuspy's fingerprint (md5 of the
        # first 64 KiB + size) never matches another scenario's file.
        first = hashlib.sha256(seed_tag.encode()).digest() + os.urandom(MiB - 32)
        block = first[: min(MiB, left)]
        while left > 0:
            f.write(block)
            h.update(block)
            left -= len(block)
            block = os.urandom(min(MiB, left))
    return h.hexdigest()


def tus_head(url):
    return requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=HTTP_TIMEOUT)


def head_offset(url):
    r = tus_head(url)
    check(r.status_code == 200, f"HEAD {url}: {r.status_code}, expected 200")
    return int(r.headers["Upload-Offset"])


def quote_key(key):
    return "/".join(requests.utils.quote(seg, safe="") for seg in key.split("/"))


def verify_dataset(base, key, path, size, digest, meta):
    """The catalog lists the dataset with the right size and blake3 (and
    metadata), and GET /data/{key} gives back exactly the file's bytes."""
    r = requests.get(f"{base}/datasets/{quote_key(key)}", timeout=HTTP_TIMEOUT)
    check(r.status_code == 200, f"GET /datasets/{key}: {r.status_code} {r.text[:300]}")
    rec = r.json()
    check(rec.get("key") == key, f"record key {rec.get('key')!r}, expected {key!r}")
    check(rec.get("size") == size, f"record size {rec.get('size')}, expected {size}")
    check(rec.get("blake3") == digest, f"record blake3 {rec.get('blake3')}, expected {digest}")
    for field, want in meta.items():
        check(rec.get(field) == want, f"record {field} {rec.get(field)!r}, expected {want!r}")
    say(f"  ok: GET /datasets/{key}: size {size}, blake3 {digest[:16]}..."
        + "".join(f", {k}={v!r}" for k, v in meta.items()))

    h = blake3.blake3()
    got = 0
    with requests.get(f"{base}/data/{quote_key(key)}", stream=True, timeout=HTTP_TIMEOUT) as r, \
            open(path, "rb") as f:
        check(r.status_code == 200, f"GET /data/{key}: {r.status_code}")
        check(r.headers.get("ETag") == f'"{digest}"', f"GET /data/{key}: ETag {r.headers.get('ETag')}")
        check(int(r.headers.get("Content-Length", -1)) == size,
              f"GET /data/{key}: Content-Length {r.headers.get('Content-Length')}")
        for chunk in r.iter_content(chunk_size=MiB):
            want = f.read(len(chunk))
            check(chunk == want, f"GET /data/{key}: bytes differ in the MiB at offset {got}")
            h.update(chunk)
            got += len(chunk)
        check(f.read(1) == b"", f"GET /data/{key}: {got} bytes, shorter than the file")
    check(got == size, f"GET /data/{key}: {got} bytes, expected {size}")
    check(h.hexdigest() == digest, f"GET /data/{key}: blake3 of the download differs")
    say(f"  ok: GET /data/{key}: {got} bytes, byte-identical to the source")


def uploads_dir_files(data_dir):
    d = os.path.join(data_dir, "uploads")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def upload_id(url):
    return url.rstrip("/").rsplit("/", 1)[-1]


class RoundRobinProxy:
    """A TCP proxy on 127.0.0.1 in front of several nodes, in a thread of
    its own: each connection goes to the next node in turn, and each
    request head gets `Connection: close` (any Connection or Keep-Alive
    header dropped), so that no connection carries a second request and
    consecutive requests always reach different nodes. `routed` lists
    (node index, request line) in order."""

    def __init__(self, bases):
        self.upstreams = [(u.hostname, u.port) for u in map(urlsplit, bases)]
        self.routed = []
        self._next = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        check(ready.wait(10), "the round-robin proxy did not start within 10 s")
        self.base = f"http://127.0.0.1:{self.port}"

    def _run(self, ready):
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        # Stopped: connections still open are cut inside the loop, so that
        # their clean-up runs before it closes.
        server.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def stop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def last(self):
        """Where the last request went, for messages."""
        return f"{self.routed[-1][1]} -> node {chr(65 + self.routed[-1][0])}" if self.routed else "no request"

    async def _serve(self, client_r, client_w):
        node_w = None
        try:
            head = await asyncio.wait_for(client_r.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT)
            lines = head[:-4].split(b"\r\n")
            kept = [l for l in lines[1:]
                    if l.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")]
            i = self._next % len(self.upstreams)
            self._next += 1
            self.routed.append((i, lines[0].decode(errors="replace")))
            node_r, node_w = await asyncio.wait_for(asyncio.open_connection(*self.upstreams[i]), HTTP_TIMEOUT)
            node_w.write(b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n")
            to_node = asyncio.ensure_future(self._pipe(client_r, node_w))
            try:
                # The answer, until the node closes the connection after it.
                await asyncio.wait_for(self._pipe(node_r, client_w), 10 * HTTP_TIMEOUT)
            finally:
                to_node.cancel()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy stops: a connection still open is cut, quietly
        finally:
            for w in (client_w, node_w):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pipe(r, w):
        while True:
            data = await r.read(256 * 1024)
            if not data:
                return
            w.write(data)
            await w.drain()


# ---------------------------------------------------------- child process --


def child_main(args):
    """One tuspy client process: resumes from the URL storage if it knows
    the file, else creates the upload; then uploads chunk by chunk."""
    client = tus_client.TusClient(f"{args.base}/uploads")
    storage = FileStorage(args.storage)
    uploader = client.uploader(
        file_path=args.file,
        chunk_size=args.chunk,
        metadata=json.loads(args.metadata),
        store_url=True,
        url_storage=storage,
        upload_checksum=True,
        retries=3,
        retry_delay=1,
    )
    if not uploader.url:
        # What Uploader.upload() does first; done here so the URL is known
        # (and printed) before any byte is sent.
        uploader.set_url(uploader.create_url())
        uploader.offset = 0
        say(f"CREATED {uploader.url}")
    else:
        say(f"RESUMING {uploader.url} {uploader.offset}")
    while uploader.offset < uploader.stop_at:
        say(f"SEND {uploader.offset}")
        uploader.upload_chunk()
        say(f"OFFSET {uploader.offset}")
        if args.pace:
            time.sleep(args.pace)
    headers = uploader.request.response_headers if uploader.request else {}
    say(f"DONE {uploader.url} {uploader.offset} etag={headers.get('etag', '')}")


class Child:
    """A tuspy client in its own process; its stdout lines are collected."""

    def __init__(self, args, file, storage, metadata, pace, tag):
        cmd = [sys.executable, os.path.abspath(__file__), "_client",
               "--base", args.base, "--file", file, "--storage", storage,
               "--chunk", str(args.chunk_mib * MiB), "--metadata", json.dumps(metadata),
               "--pace", str(pace)]
        self.tag = tag
        self.lines = []
        self.err_path = os.path.join(args.work, f"{tag}.stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def first(self, prefix):
        for line in list(self.lines):
            if line.startswith(prefix):
                return line
        return None

    def wait_line(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.first(prefix)
            if line:
                return line
            if self.proc.poll() is not None:
                self.reader.join(2)
                line = self.first(prefix)
                if line:
                    return line
                raise Failure(f"{self.tag}: exited {self.proc.returncode} before '{prefix}': "
                              + self.stderr_tail())
            time.sleep(0.02)
        raise Failure(f"{self.tag}: no '{prefix}' line within {timeout}s")

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{self.tag}: still running after {timeout}s")
        finally:
            self.reader.join(2)

    def stderr_tail(self):
        self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read()[-1500:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.err.close()


# --------------------------------------------------------------- scenarios --


def scenario_resume(args):
    size = args.size_mib * MiB
    chunk = args.chunk_mib * MiB
    key = "e2e/tuspy/resume.bin"
    meta = {"key": key, "name": "tuspy resume", "description": "killed client, resumed by another",
            "filetype": "application/x-e2e"}
    path = os.path.join(args.work, "resume.bin")
    storage = os.path.join(args.work, "tuspy-urls.json")
    t0 = time.monotonic()
    digest = generate(path, size, "tuspy-resume")
    say(f"  generated {args.size_mib} MiB in {time.monotonic() - t0:.1f}s, blake3 {digest[:16]}...")

    children = []
    try:
        # Client 1: paced between chunks (0.15 s) so that the kill lands midway.
        c1 = Child(args, path, storage, meta, pace=0.15, tag="tuspy-client-1")
        children.append(c1)
        url = c1.wait_line("CREATED ", 30).split()[1]
        check(url.startswith(f"{args.base}/uploads/"), f"upload URL {url} is not under {args.base}/uploads/")
        say(f"  client 1 (pid {c1.proc.pid}) created {url}")
        # Kill it once the server has about 40% (at least 3 chunks), 10 ms
        # into its next PATCH, so that the kill most likely breaks a request off.
        target = max(3 * chunk, (size * 2 // 5) // chunk * chunk)
        deadline = time.monotonic() + 60
        offset = 0
        while True:
            # The client's own acknowledged offsets: a HEAD here would take
            # the upload over from client 1's PATCH (as tusd's HEAD does).
            offset = max((int(l.split()[1]) for l in list(c1.lines) if l.startswith("OFFSET ")), default=0)
            if offset >= target:
                break
            check(c1.proc.poll() is None, f"client 1 exited ({c1.proc.returncode}) at offset {offset}: "
                  + c1.stderr_tail())
            check(time.monotonic() < deadline, f"HEAD offset still {offset} after 60 s")
            time.sleep(0.05)
        c1.wait_line(f"SEND {offset}", 10)
        time.sleep(0.01)
        os.kill(c1.proc.pid, signal.SIGKILL)
        c1.wait(10)
        check(c1.proc.returncode == -signal.SIGKILL, f"client 1 ended with {c1.proc.returncode}, not SIGKILL")
        acked = [int(l.split()[1]) for l in c1.lines if l.startswith("OFFSET ")]
        last_ack = max(acked, default=0)
        check(c1.first("DONE") is None, "client 1 finished before it was killed")
        # The server notices the broken connection; wait until the offset settles.
        time.sleep(0.3)
        settled = head_offset(url)
        check(settled < size, f"offset {settled} after the kill: the upload is already complete")
        check(settled >= last_ack, f"offset {settled} after the kill is below the last acknowledged {last_ack}")
        check(settled % chunk == 0,
              f"offset {settled} after the kill is not on a chunk boundary: a chunk with an "
              "Upload-Checksum that broke off should be discarded, not kept")
        in_flight = c1.lines[-1].startswith("SEND ") if c1.lines else False
        say(f"  SIGKILLed client 1 {'during its PATCH from' if in_flight else 'after its PATCH to'} "
            f"{max(last_ack, offset)}; last 204 it saw: {last_ack}; server offset now {settled} ({settled / size:.0%})")

        with open(storage) as f:
            stored = json.load(f)
        check(url in json.dumps(stored), f"tuspy's URL storage does not hold {url}: {stored}")

        # Client 2: a new process; tuspy finds the URL by the file's fingerprint.
        c2 = Child(args, path, storage, meta, pace=0, tag="tuspy-client-2")
        children.append(c2)
        line = c2.wait_line("RESUMING ", 30).split()
        check(line[1] == url, f"client 2 resumed {line[1]}, expected {url}")
        check(int(line[2]) == settled, f"client 2 starts at {line[2]}, expected the server's {settled}")
        say(f"  client 2 (pid {c2.proc.pid}) resumes {url} at offset {line[2]} from tuspy's URL storage")
        rc = c2.wait(180)
        check(rc == 0, f"client 2 exited {rc}: " + c2.stderr_tail())
        done = c2.wait_line("DONE ", 1).split()
        check(int(done[2]) == size, f"client 2 finished at offset {done[2]}, expected {size}")
        check(done[3] == f'etag="{digest}"', f"final PATCH answered {done[3]}, expected etag=\"{digest}\"")
        check(c2.first("CREATED") is None, "client 2 created a new upload instead of resuming")
        say("  client 2 finished; the final PATCH's ETag is the blake3")
    finally:
        for c in children:
            c.stop()

    r = tus_head(url)
    check(r.status_code == 200 and int(r.headers["Upload-Offset"]) == size,
          f"HEAD after completion: {r.status_code} offset {r.headers.get('Upload-Offset')}")
    check(r.headers.get("ETag") == f'"{digest}"', f"HEAD after completion: ETag {r.headers.get('ETag')}")
    say(f"  ok: HEAD after completion: offset {size}, ETag = blake3, Content-Location {r.headers.get('Content-Location')}")
    verify_dataset(args.base, key, path, size, digest,
                   {"name": meta["name"], "description": meta["description"], "content_type": meta["filetype"]})
    left = uploads_dir_files(args.data_dir)
    check(left == [], f"{args.data_dir}/uploads still holds {left}")
    say("  ok: nothing left under <data-dir>/uploads/")
    os.remove(path)


def checksum_uploader(name, fn):
    class _Uploader(Uploader):
        CHECKSUM_ALGORITHM_PAIR = (name, fn)
    _Uploader.__name__ = f"Uploader_{name}"
    return _Uploader


def scenario_checksums(args):
    size = 3 * MiB + 12345
    client = tus_client.TusClient(f"{args.base}/uploads")
    cases = [
        ("sha1", hashlib.sha1, "key"),
        ("md5", hashlib.md5, "key"),
        ("sha256", hashlib.sha256, "filename"),
    ]
    for name, fn, key_field in cases:
        key = f"e2e/tuspy/checksum-{name}.bin"
        path = os.path.join(args.work, f"checksum-{name}.bin")
        digest = generate(path, size, f"checksum-{name}")
        cls = Uploader if name == "sha1" else checksum_uploader(name, fn)
        up = cls(file_path=path, client=client, chunk_size=MiB, metadata={key_field: key},
                 upload_checksum=True)
        up.upload()
        check(up.offset == size, f"{name}: offset {up.offset} after upload(), expected {size}")
        # What tuspy put on its last PATCH (kept on its request object): proof
        # that the checksum was sent, so that the server did verify it.
        sent = up.request and up.request._request_headers.get("upload-checksum", "")
        check(sent.startswith(f"{name} "), f"{name}: the client sent Upload-Checksum {sent!r}")
        say(f"  ok: {name}: 4 PATCHes with Upload-Checksum '{name} ...', metadata `{key_field}`")
        verify_dataset(args.base, key, path, size, digest, {})
        os.remove(path)

    # A wrong checksum: the server answers 460 and keeps nothing of the chunk.
    key = "e2e/tuspy/checksum-bad.bin"
    path = os.path.join(args.work, "checksum-bad.bin")
    digest = generate(path, size, "checksum-bad")
    bad = checksum_uploader("sha256", lambda data: hashlib.sha256(data + b"not the data"))
    up = bad(file_path=path, client=client, chunk_size=MiB, metadata={"key": key}, upload_checksum=True)
    try:
        up.upload_chunk()  # creates the upload, then PATCHes 1 MiB with a wrong digest
    except TusUploadFailed as e:
        check(e.status_code == 460, f"bad checksum: status {e.status_code}, expected 460: {e.response_content!r}")
    else:
        raise Failure("a PATCH with a wrong Upload-Checksum was accepted")
    url = up.url
    check(head_offset(url) == 0, "bad checksum: the offset moved")
    left = os.path.join(args.data_dir, "uploads", upload_id(url))
    check(os.path.getsize(left) == 0, f"bad checksum: {left} holds {os.path.getsize(left)} bytes")
    say("  ok: wrong sha256 checksum: 460, offset still 0, no byte kept on disk")
    good = checksum_uploader("sha256", hashlib.sha256)(
        file_path=path, url=url, chunk_size=MiB, metadata={"key": key}, upload_checksum=True)
    check(good.offset == 0, f"resume after 460: tuspy starts at {good.offset}")
    good.upload()
    check(good.offset == size, f"resume after 460: offset {good.offset}")
    say("  ok: the same upload URL then takes the right chunks")
    verify_dataset(args.base, key, path, size, digest, {})
    os.remove(path)
    check(uploads_dir_files(args.data_dir) == [], "files left under uploads/")
    say("  ok: nothing left under <data-dir>/uploads/")


def scenario_expire(args):
    size = 8 * MiB
    key = "e2e/tuspy/expire.bin"
    path = os.path.join(args.work, "expire.bin")
    generate(path, size, "expire")
    client = tus_client.TusClient(f"{args.base}/uploads")
    up = client.uploader(file_path=path, chunk_size=MiB, metadata={"key": key}, upload_checksum=True)
    part = 3 * MiB
    up.upload(stop_at=part)  # tuspy sends only the first 3 MiB
    url = up.url
    check(up.offset == part, f"offset {up.offset} after upload(stop_at={part})")
    r = tus_head(url)
    check(r.status_code == 200 and int(r.headers["Upload-Offset"]) == part,
          f"HEAD after the partial upload: {r.status_code} {r.headers.get('Upload-Offset')}")
    expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
    check(abs(expires - (time.time() + args.expiry)) <= 2.5,
          f"Upload-Expires {r.headers['Upload-Expires']} is not ~{args.expiry}s from now")
    bytes_path = os.path.join(args.data_dir, "uploads", upload_id(url))
    check(os.path.isfile(bytes_path) and os.path.getsize(bytes_path) == part,
          f"{bytes_path} should hold the {part} bytes received")
    say(f"  tuspy sent {part} of {size} bytes to {url}; Upload-Expires {r.headers['Upload-Expires']}; "
        f"{part} bytes in <data-dir>/uploads/{upload_id(url)}")
    t0 = time.monotonic()
    status = None
    while time.monotonic() - t0 < args.expiry + 10:
        status = tus_head(url).status_code
        if status in (404, 410) and not os.path.exists(bytes_path):
            break
        time.sleep(0.1)
    waited = time.monotonic() - t0
    check(status in (404, 410), f"HEAD {waited:.1f}s after the last PATCH: {status}, expected 404 or 410")
    check(not os.path.exists(bytes_path), f"{bytes_path} still exists {waited:.1f}s after expiry")
    say(f"  ok: {waited:.1f}s later HEAD gives {status} and the bytes are gone")
    time.sleep(1.5)  # one more sweep: the row goes too, HEAD stays 404/410
    status = tus_head(url).status_code
    check(status in (404, 410), f"HEAD later: {status}")
    check(uploads_dir_files(args.data_dir) == [], "files left under uploads/")
    try:
        client.uploader(file_path=path, url=url, chunk_size=MiB)
    except TusCommunicationError as e:
        check(e.status_code in (404, 410), f"tuspy resume: status {e.status_code}")
        say(f"  ok: tuspy cannot resume it (TusCommunicationError, status {e.status_code})")
    else:
        raise Failure("tuspy resumed an expired upload")
    r = requests.get(f"{args.base}/datasets/{quote_key(key)}", timeout=HTTP_TIMEOUT)
    check(r.status_code == 404, f"GET /datasets/{key}: {r.status_code}, expected 404 (never committed)")
    say(f"  ok: no dataset at {key}")
    os.remove(path)


def scenario_takeover(args):
    """A PATCH whose client went silent (connection open, body unfinished)
    must not lock the upload until the stall timeout: a new tuspy client
    (HEAD, then PATCH) takes over at once and finishes. Twice: the hung PATCH
    without, then with an Upload-Checksum (whose bytes cannot be kept)."""
    for variant in ("plain", "checksum"):
        takeover_once(args, variant)


def takeover_once(args, variant):
    size = 6 * MiB
    key = f"e2e/tuspy/takeover-{variant}.bin"
    path = os.path.join(args.work, f"takeover-{variant}.bin")
    digest = generate(path, size, f"takeover-{variant}")
    client = tus_client.TusClient(f"{args.base}/uploads")
    up = client.uploader(file_path=path, chunk_size=MiB, metadata={"key": key}, upload_checksum=True)
    up.upload(stop_at=MiB)
    url = up.url
    check(up.offset == MiB, f"offset {up.offset} after the first MiB")
    # The silent client, by hand (not tuspy): a PATCH that announces 5 MiB,
    # sends 700000 bytes of it and then neither sends nor closes.
    host, port = args.base.split("//", 1)[1].split(":")
    with open(path, "rb") as f:
        f.seek(MiB)
        chunk = f.read(5 * MiB)
    sent = 700000
    extra = ""
    if variant == "checksum":
        extra = f"Upload-Checksum: sha1 {base64.b64encode(hashlib.sha1(chunk).digest()).decode()}\r\n"
    stuck = socket.create_connection((host, int(port)), timeout=HTTP_TIMEOUT)
    try:
        stuck.sendall((f"PATCH {url[len(args.base):]} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                       f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {MiB}\r\n{extra}"
                       f"Content-Type: application/offset+octet-stream\r\n"
                       f"Content-Length: {len(chunk)}\r\n\r\n").encode() + chunk[:sent])
        time.sleep(0.5)
        say(f"  [{variant}] a PATCH from {MiB}{' with Upload-Checksum' if extra else ''} sent {sent} "
            f"of its {len(chunk)} bytes and hangs (connection open)")
        t0 = time.monotonic()
        up2 = client.uploader(file_path=path, url=url, chunk_size=MiB, upload_checksum=True)
        seen = up2.offset
        check(MiB <= seen <= MiB + sent, f"tuspy's HEAD says {seen}")
        try:
            up2.upload()
        except TusUploadFailed as e:
            body = (e.response_content or b"").decode(errors="replace")
            check(e.status_code == 409, f"takeover PATCH: {e.status_code} {body[:300]}")
            detail = json.loads(body).get("detail", body) if body.startswith("{") else body
            msg = (f"HEAD said {seen} while the hung PATCH held the upload; tuspy's PATCH from "
                   f"{seen} then got 409 ({detail})")
            if args.strict_takeover:
                raise Failure(msg)
            say(f"  KNOWN ISSUE [{variant}]: {msg}; a second tuspy client (new HEAD) goes on")
            up2 = client.uploader(file_path=path, url=url, chunk_size=MiB, upload_checksum=True)
            up2.upload()
        took = time.monotonic() - t0
        check(up2.offset == size, f"offset {up2.offset} after the takeover")
        check(took < 15, f"the takeover took {took:.1f}s")
        say(f"  ok: [{variant}] a new tuspy client took the upload over and finished it in {took:.2f}s "
            f"(first HEAD: {seen})")
        stuck.settimeout(10)
        try:
            answer = stuck.recv(200).decode(errors="replace").split("\r\n", 1)[0]
        except OSError as e:
            answer = f"no answer ({e})"
        say(f"  [{variant}] the hung PATCH's connection got: {answer or 'closed'}")
    finally:
        stuck.close()
    verify_dataset(args.base, key, path, size, digest, {})
    check(uploads_dir_files(args.data_dir) == [], "files left under uploads/")
    os.remove(path)


def scenario_cluster(args):
    bases = [b.rstrip("/") for b in args.bases.split(",")]
    check(len(bases) >= 2, f"--bases lists {len(bases)} node(s); a cluster needs 2 or more")
    proxy = RoundRobinProxy(bases)
    say(f"  round-robin proxy {proxy.base} over {', '.join(bases)}")
    try:
        cluster_upload(args, bases, proxy)
    finally:
        proxy.stop()


def tus_step(proxy, what, fn):
    """Runs one tuspy call; a refusal becomes a Failure that says which
    node answered what."""
    try:
        return fn()
    except (TusUploadFailed, TusCommunicationError) as e:
        body = (e.response_content or b"")[:300].decode(errors="replace")
        raise Failure(f"{what} ({proxy.last()}): {e.status_code} {body}") from None


def cluster_upload(args, bases, proxy):
    size = args.size_mib * MiB + 333  # over two 8 MiB parts, and a tail
    key = "e2e/tuspy/cluster.bin"
    meta = {"key": key, "name": "tuspy cluster", "filetype": "application/x-e2e"}
    path = os.path.join(args.work, "cluster.bin")
    digest = generate(path, size, "tuspy-cluster")
    client = tus_client.TusClient(f"{proxy.base}/uploads")
    # retries=0 (tuspy's default, said aloud): a 409 or 503 from a node that
    # does not hold the upload must fail the scenario, not be retried until
    # the request lands on the node that does.
    up = client.uploader(file_path=path, chunk_size=MiB, metadata=meta, upload_checksum=True, retries=0)
    up.set_url(tus_step(proxy, "POST /uploads", up.create_url))
    up.offset = 0
    url = up.url
    check(url.startswith(f"{proxy.base}/uploads/"), f"upload URL {url} is not under the proxy's /uploads/")
    sizes = [3 * MiB, 5 * MiB, 1, 9 * MiB]
    for n in sizes:
        up.chunk_size = n
        tus_step(proxy, f"PATCH of {n} bytes at {up.offset}", up.upload_chunk)
    half = up.offset
    check(half == sum(sizes), f"offset {half} after {len(sizes)} PATCHes of {sizes}")
    say(f"  tuspy sent PATCHes of {sizes} bytes (with sha1 Upload-Checksum) to {url}")

    # A new client resumes: its HEAD, then the rest in 4 MiB PATCHes.
    up2 = tus_step(proxy, "a new client's HEAD", lambda: client.uploader(
        file_path=path, url=url, chunk_size=4 * MiB, upload_checksum=True, retries=0))
    check(up2.offset == half, f"a new client's HEAD says {up2.offset}, expected {half}")
    tus_step(proxy, f"PATCHes of 4 MiB from {half}", up2.upload)
    check(up2.offset == size, f"offset {up2.offset} after upload(), expected {size}")
    etag = up2.request.response_headers.get("etag", "")
    check(etag == f'"{digest}"', f"the last PATCH's ETag {etag!r}, expected the blake3")
    say(f"  a new tuspy client resumed at {half} (HEAD) and finished; the last PATCH's ETag is the blake3")

    routed = list(proxy.routed)
    nodes = [i for i, _ in routed]
    by_method = {}
    for i, line in routed:
        by_method.setdefault(line.split(" ", 1)[0], set()).add(i)
    check(nodes == [n % len(bases) for n in range(len(nodes))],
          f"the requests did not go round robin: {routed}")
    check(by_method.get("PATCH") == set(range(len(bases))), f"not every node got a PATCH: {routed}")
    check(by_method.get("POST") != by_method.get("HEAD"), f"the HEAD went to the node that created it: {routed}")
    say(f"  ok: {len(routed)} requests round robin over {len(bases)} nodes: "
        + ", ".join(f"{line.split(' ', 1)[0]}->{chr(65 + i)}" for i, line in routed))

    for i, base in enumerate(bases):
        node_url = f"{base}{urlsplit(url).path}"
        r = tus_head(node_url)
        check(r.status_code == 200 and r.headers.get("Upload-Offset") == str(size),
              f"HEAD {node_url} after completion: {r.status_code} offset {r.headers.get('Upload-Offset')}")
        say(f"  node {chr(65 + i)}:")
        verify_dataset(base, key, path, size, digest, {"name": meta["name"], "content_type": meta["filetype"]})
    os.remove(path)


# -------------------------------------------------------------------- main --


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("resume", "checksums", "expire", "takeover"):
        s = sub.add_parser(name)
        s.add_argument("--base", required=True, help="the node, e.g. http://127.0.0.1:8000")
        s.add_argument("--work", required=True, help="a scratch directory")
        s.add_argument("--data-dir", required=True, help="the node's data_dir")
        s.add_argument("--size-mib", type=int, default=200)
        s.add_argument("--chunk-mib", type=int, default=5)
        s.add_argument("--expiry", type=int, default=2, help="the node's upload_expiry")
        s.add_argument("--strict-takeover", action="store_true",
                       help="takeover: fail on a 409 to the first PATCH after a HEAD (else report it)")
    s = sub.add_parser("cluster")
    s.add_argument("--bases", required=True, help="every node, comma-separated")
    s.add_argument("--work", required=True, help="a scratch directory")
    s.add_argument("--size-mib", type=int, default=24)
    c = sub.add_parser("_client")
    c.add_argument("--base", required=True)
    c.add_argument("--file", required=True)
    c.add_argument("--storage", required=True)
    c.add_argument("--chunk", type=int, required=True)
    c.add_argument("--metadata", required=True)
    c.add_argument("--pace", type=float, default=0)
    args = p.parse_args()
    if args.cmd == "_client":
        child_main(args)
        return 0
    if args.cmd != "cluster":
        args.base = args.base.rstrip("/")
    os.makedirs(args.work, exist_ok=True)
    # A SIGTERM from the runner unwinds (and stops any client process started here).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        {"resume": scenario_resume, "checksums": scenario_checksums, "expire": scenario_expire,
         "takeover": scenario_takeover, "cluster": scenario_cluster}[args.cmd](args)
    except Failure as e:
        say(f"FAIL: tuspy {args.cmd}: {e}")
        return 1
    say(f"PASS: tuspy {args.cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
