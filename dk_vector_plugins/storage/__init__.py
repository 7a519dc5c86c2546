"""The log-structured table shared by the file and S3 backends (see ``docs/ARCHITECTURE.md``).

* :mod:`.ops`: the object-store operations the table logic asks for, and the drivers that carry
  them out on a sync store (threads for parallel requests) or an async one (``asyncio.gather``);
* :mod:`.npy`: encoding, decoding and memory-mapping the ``.npy`` arrays of segments;
* :mod:`.local`: the local-directory object store (atomic, fsynced);
* :mod:`.s3`: the S3 object store (boto3 and aioboto3), key naming and the segment cache;
* :mod:`.row_codec`: the JSON-lines encoding of a segment's rows (data, metadata, vector info);
* :mod:`.log_format`: the table logic itself, sans I/O: manifests, segments, commits, refresh,
  compaction, clean-up and verification, written once as generators of operations;
* :mod:`.driver`: :class:`~.driver.TableStorage`, the core's ``Storage`` for a table on an
  object store;
* :mod:`.segments`: read-only access to the segments of a stored version (for plugins that
  search a table elsewhere, such as the Dask executor).
"""
