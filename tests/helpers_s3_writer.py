"""Child process for the S3 race test: commit N single-record writes into one table.

Usage: python helpers_s3_writer.py ENDPOINT BUCKET PREFIX WRITER N
Prints ``done <count>`` when finished.
"""

from __future__ import annotations

import sys

import numpy as np

from dk_vector_plugins import DatabaseFactory, Record, VectorField


def main() -> None:
    endpoint, bucket, prefix, writer, n = sys.argv[1:6]
    db = DatabaseFactory().create(
        backend="s3",
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        vector_enabled=True,
        commit_retries=200,
    )
    rng = np.random.default_rng(int(writer))
    for i in range(int(n)):
        db.create(Record({"writer": int(writer), "i": i, "embedding": VectorField(rng.random(4))}, id=f"w{writer}-{i}"))
    print("done", i + 1, flush=True)
    db.close()


if __name__ == "__main__":
    main()
