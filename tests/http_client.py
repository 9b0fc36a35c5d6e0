"""Real HTTP for tests: a uvicorn server on 127.0.0.1 in a thread, and a keep-alive client."""

import http.client
import json
import threading
import time
from contextlib import contextmanager

import uvicorn


@contextmanager
def running(app, port):
    """Serve `app` with uvicorn on 127.0.0.1:port in a thread; stop it afterwards."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


class Client:
    """A keep-alive JSON client over http.client (one per thread)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None, raw=None, headers=()):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, data, {"content-type": "application/json", **dict(headers)})
        response = self.conn.getresponse()
        text = response.read().decode()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(text) if kind.startswith("application/json") else text
