"""The ceiling for bench/decision_api.py: a bare Flask JSON endpoint doing no work at all."""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/decide")
def decide():
    question = request.get_json()
    return jsonify(decision="allow", reasons=[f"bare answer for {question['user']}"])
