"""An action server that takes its time: ``action_slow`` answers "slow <tag> done" after
``SLOW_ACTION_SECONDS`` (default 30). Runs as the node tier bots' action server
(``python slow_action.py``, standard library only, port 5055), so a "slow m7" message holds
its conversation's lock for that long, as a slow backend would."""

from __future__ import annotations

import json
import os
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECONDS = float(os.environ.get("SLOW_ACTION_SECONDS", "30"))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        text = str(((body.get("tracker") or {}).get("latest_message") or {}).get("text") or "")
        found = re.search(r"\bm\d+\b", text)
        tag = found.group(0) if found else "?"
        print(f"action_slow started for {tag}", flush=True)  # the test waits for this line
        time.sleep(SECONDS)
        reply = json.dumps({"events": [], "responses": [{"text": f"slow {tag} done"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 5055), Handler).serve_forever()
