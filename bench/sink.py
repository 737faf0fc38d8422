"""A minimal ingest endpoint for benchmarks, run as its own process so it cannot compete for the
client's GIL. It answers every POST with 202 and counts that account for every event in it (the client
checks them: an answer that does not is resent); with `--count` it also counts the events it received,
which `GET /stats` returns: each event's id key (`"event_id":` in the OpenMonetize wire format,
`"messageId":` in Segment's), found by one C-level scan of the body.

It scans rather than parses so that the sink is not what a benchmark measures: `json.loads` of every
1000-event OpenMonetize body (~240 KB), on the sink's one core, held the delivered events/s of
bench/track.py and bench/spool.py to the sink's own rate (issue 14; BENCHMARKS.md). A key's text can
appear only as a key: inside a JSON string its quotes would be escaped.

    python bench/sink.py [--port PORT] [--count]     # prints the port it listens on
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = '{{"accepted": {}, "duplicates": 0, "rejected": 0, "batch_id": "bench"}}'
COUNT = "--count" in sys.argv
counts = {"events": 0, "requests": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the body waits for the client's delayed ACK (~40 ms)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        events = raw.count(b'"event_id":')  # cheaper than parsing: one C-level scan
        answer = ANSWER.format(events).encode()
        if not COUNT:
            self.answer(202, answer)
            return
        received = raw.count(b'"messageId":') if self.path.endswith("/v1/batch") else events
        with lock:
            counts["events"] += received
            counts["requests"] += 1
        self.answer(202, answer)

    def do_GET(self) -> None:
        with lock:
            self.answer(200, json.dumps(counts).encode())

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: when more clients connect at once (the concurrent rows open 8), the
    # kernel drops the extra SYNs and the client resends them after 1 s, a stall that swamped whole rounds
    request_queue_size = 128


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    server = Server(("127.0.0.1", port), Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
