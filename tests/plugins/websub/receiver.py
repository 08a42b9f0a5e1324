"""A WebSub subscriber's callback on loopback, for tests and the soak: answers verifications of
intent (echoes ``hub.challenge``) and records every content delivery."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Receiver:
    """A WebSub subscriber's callback on loopback: answers verifications, records deliveries."""

    def __init__(self) -> None:
        self.deliveries: list[bytes] = []
        self.verified: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                challenge = query.get("hub.challenge", [""])[0].encode()
                receiver.verified.append(query.get("hub.mode", ["?"])[0])
                self.send_response(200)
                self.send_header("Content-Length", str(len(challenge)))
                self.end_headers()
                self.wfile.write(challenge)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.deliveries.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self, text: str) -> bool:
        return bool(self.deliveries) and text.encode() in self.deliveries[-1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

