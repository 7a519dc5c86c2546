"""The log-structured table format shared by the file and S3 backends.

* :mod:`.ops`: the object-store operations the table logic asks for, and the drivers that carry
  them out on a sync store (threads for parallel requests) or an async one (``asyncio.gather``);
* :mod:`.local`: the local-directory object store (atomic, fsynced);
* :mod:`.table`: the table logic itself, sans I/O: manifests, segments, commits, refresh,
  compaction and clean-up, written once as generators of operations.
"""
