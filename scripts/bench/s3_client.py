#!/usr/bin/env python3
"""Direct S3 transfers with boto3, for the S3 section of scripts/bench.sh.

Usage: s3_client.py ready TIMEOUT_S
       s3_client.py put FILE KEY PART_BYTES CONCURRENCY
       s3_client.py put-defaults FILE KEY
       s3_client.py get KEY SIZE

The store comes from the environment: BENCH_S3_ENDPOINT, BENCH_S3_REGION,
BENCH_S3_BUCKET, BENCH_S3_ACCESS_KEY, BENCH_S3_SECRET_KEY (path-style URLs).

  ready         head_bucket until it answers (at most TIMEOUT_S seconds)
  put           upload_file with a TransferConfig of PART_BYTES parts
                (and multipart threshold), CONCURRENCY threads; no
                optional request checksums (the node sends none either)
  put-defaults  upload_file with boto3's defaults throughout (TransferConfig()
                and botocore's default checksum settings)
  get           one get_object, the body read in 1 MiB chunks and dropped
                (as curl -o /dev/null does); checks that SIZE bytes came

put, put-defaults and get print one line on success:
  RESULT <seconds> <bytes> <client CPU seconds>
timed from just before the transfer call to its return (client set-up and
the interpreter's start are outside). Anything else is an error (exit 1).
"""

import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def client(defaults: bool):
    settings = {
        "s3": {"addressing_style": "path"},
        "retries": {"max_attempts": 1, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 300,
    }
    if not defaults:
        settings["request_checksum_calculation"] = "when_required"
        settings["response_checksum_validation"] = "when_required"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
        region_name=os.environ["BENCH_S3_REGION"],
        aws_access_key_id=os.environ["BENCH_S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["BENCH_S3_SECRET_KEY"],
        config=Config(**settings),
    )


def result(t0: float, c0: float, n: int) -> None:
    print(f"RESULT {time.perf_counter() - t0:.6f} {n} {time.process_time() - c0:.2f}", flush=True)


def main() -> int:
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = args[0], args[1:]
    bucket = os.environ["BENCH_S3_BUCKET"]
    if cmd == "ready" and len(args) == 1:
        s3 = client(False)
        deadline = time.monotonic() + float(args[0])
        while True:
            try:
                s3.head_bucket(Bucket=bucket)
                return 0
            except Exception as e:  # not up yet, or no bucket yet
                if time.monotonic() > deadline:
                    print(f"bucket {bucket} not reachable: {e}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
    if cmd in ("put", "put-defaults"):
        if cmd == "put" and len(args) == 4:
            path, key, part, conc = args[0], args[1], int(args[2]), int(args[3])
            config = TransferConfig(
                multipart_threshold=part, multipart_chunksize=part, max_concurrency=conc, use_threads=True
            )
            s3 = client(False)
        elif cmd == "put-defaults" and len(args) == 2:
            path, key = args
            config = TransferConfig()
            s3 = client(True)
        else:
            print(__doc__, file=sys.stderr)
            return 2
        size = os.path.getsize(path)
        t0, c0 = time.perf_counter(), time.process_time()
        s3.upload_file(path, bucket, key, Config=config)
        result(t0, c0, size)
        stored = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if stored != size:
            print(f"{key}: stored {stored} bytes, sent {size}", file=sys.stderr)
            return 1
        return 0
    if cmd == "get" and len(args) == 2:
        key, expected = args[0], int(args[1])
        s3 = client(False)
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(chunk_size=1 << 20):
            n += len(chunk)
        result(t0, c0, n)
        if n != expected:
            print(f"{key}: got {n} bytes, expected {expected}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
