"""The baseline for the ingest benchmark: a bare Flask handler that reads and parses the JSON
body and answers Tencent's OK envelope, with nothing else (no checks, no database).

Served by the same `gunicorn -c gunicorn.conf.py` as the receiver: `gunicorn -c gunicorn.conf.py
bench.bare_app:app`.
"""

from __future__ import annotations

import json

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/im/callback")
def im_callback():
    body = json.loads(request.get_data())
    if not isinstance(body, dict):
        return jsonify({"ActionStatus": "FAIL", "ErrorCode": 4000, "ErrorInfo": "not an object"}), 400
    return jsonify({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
