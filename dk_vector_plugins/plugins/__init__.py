"""Optional built-in plugins that need extra dependencies (installed with an extra, imported lazily).

* :mod:`.dask` (entry point ``dask``, extra ``dask``): exact vector search and bulk
  embedding of file and S3 stores across a Dask cluster, for stores configured with
  ``executor="dask"``.
"""
