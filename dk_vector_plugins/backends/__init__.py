"""The built-in backend plugins: ``memory``, ``file`` and ``s3``; each is an ordinary plugin."""
