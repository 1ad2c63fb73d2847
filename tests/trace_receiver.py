#!/usr/bin/env python3
"""A Zipkin/Datadog collector for tests/trace.rs: accepts POSTs on 127.0.0.1:PORT, decodes each
body by its content type (Zipkin v2 JSON, or Datadog msgpack with the `msgpack` package) and
prints one JSON line per request: {"path", "headers", "body"}. Answers 202 (Zipkin) or 200 with
the agent's `rate_by_service` (Datadog). With CERT and KEY it speaks HTTPS.
Usage: trace_receiver.py PORT [CERT KEY]"""
import http.server
import json
import ssl
import sys

import msgpack  # python3 -m pip install -r requirements-test.txt


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/msgpack"):
            body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        elif ctype.startswith("application/json"):
            body = json.loads(raw)
        else:
            body = raw.decode("latin-1")
        line = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        reply = b'{"rate_by_service":{}}' if "traces" in self.path else b""
        self.send_response(200 if reply else 202)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
sys.stdout.write("listening\n")
sys.stdout.flush()
server.serve_forever()
