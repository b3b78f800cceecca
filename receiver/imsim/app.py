"""Flask app factory for the IM simulator: the REST routes and the /_sim test hooks."""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from receiver.imsim.callbacks import CallbackSender
from receiver.imsim.config import SimConfig
from receiver.imsim.rest import Sim, handle
from receiver.imsim.state import SimState


def create_sim_app(sim_config: SimConfig, *, state: SimState | None = None,
                   sender: CallbackSender | None = None) -> Flask:
    """Build the simulator app; `app.extensions["imsim"]` holds its config, state and sender."""
    app = Flask("receiver.imsim")
    state = state if state is not None else SimState(seed=sim_config.seed)
    sender = sender if sender is not None else CallbackSender(sim_config, state)
    sim = Sim(sim_config, state, sender)
    app.extensions["imsim"] = sim

    @app.post("/v4/group_open_http_svc/<command>")
    def group_api(command: str) -> ResponseReturnValue:
        """Answer a Tencent IM group REST call."""
        received_at = state.clock()  # counted per calendar second of receipt, like Tencent
        return jsonify(handle(sim, command, request.args, request.get_data(cache=False), received_at))

    @app.get("/_sim/stats")
    def stats() -> ResponseReturnValue:
        """Report calls, errors, peak calls per second, callbacks and groups."""
        return jsonify(state.stats())

    @app.post("/_sim/reset")
    def reset() -> ResponseReturnValue:
        """Forget every group and counter."""
        state.reset()
        return jsonify({"ok": True})

    return app
