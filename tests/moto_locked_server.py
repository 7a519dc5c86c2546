"""moto's standalone S3 server, with requests handled one at a time.

Real S3 applies a conditional ``PutObject`` (``IfNoneMatch="*"``, ``IfMatch``) atomically; moto's
threaded server checks and stores in two steps, so two racing writers can in rare cases both
succeed. Serializing requests restores the guarantee the table format relies on, without
changing anything else about the server (it is moto's own WSGI app on a real HTTP port).

Usage: ``python moto_locked_server.py HOST PORT`` (port 0 picks a free one; the chosen port is
printed as ``PORT <n>`` on the first line of stdout).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any


def main() -> None:
    from moto.moto_server import werkzeug_app
    from werkzeug.serving import make_server

    host, port = sys.argv[1], int(sys.argv[2])
    app = werkzeug_app.DomainDispatcherApplication(werkzeug_app.create_backend_app)
    handler = getattr(werkzeug_app, "MotoRequestHandler", None)  # moto >= 5.2.x; else werkzeug's
    lock = threading.Lock()

    def locked(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    server = make_server(host, port, locked, threaded=True, request_handler=handler)
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
