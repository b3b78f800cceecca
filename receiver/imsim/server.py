"""Run the IM simulator on waitress, in the foreground or in a background thread.

waitress keeps HTTP/1.1 connections open between requests, as Tencent's gateway does (the
werkzeug development server closes every one, which made each simulated REST call cost a new
TCP connection and a new thread on both sides), and serves them from a fixed pool of threads.
"""

from __future__ import annotations

import logging
import signal
import threading

from flask import Flask
from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

from receiver.imsim.app import create_sim_app
from receiver.imsim.config import SimConfig
from receiver.imsim.rest import Sim
from receiver.imsim.state import SimState

# Enough for a dispatcher's concurrent calls plus long-lived idle keep-alive connections.
THREADS = 32
CONNECTION_LIMIT = 1000


def _make(host: str, port: int, sim_config: SimConfig) -> tuple[BaseWSGIServer, Flask]:
    app = create_sim_app(sim_config)
    server = create_server(app, host=host, port=port, threads=THREADS, connection_limit=CONNECTION_LIMIT,
                           ident="imsim", expose_tracebacks=False)
    # A deep task queue only means the dispatcher is busy, which is what the simulator is for.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return server, app


def _shutdown(server: BaseWSGIServer) -> None:
    """Close the listening socket and every open connection, and leave the loop (run in its thread).

    The trigger that runs this is only taken off the loop here; its pipe is closed once the
    request threads are done (they pull it when they finish a response).
    """
    for channel in list(server._map.values()):
        if channel is server:
            wasyncore.dispatcher.close(server)  # the listening socket only, not the trigger
        elif channel is not server.trigger:
            channel.close()
    server.trigger.del_channel()


class RunningSim:
    """A simulator serving from a background thread; `stop()` shuts it down."""

    def __init__(self, server: BaseWSGIServer, app: Flask) -> None:
        self.server = server
        self.app = app
        self.sim: Sim = app.extensions["imsim"]
        self.host, self.port = server.effective_host, int(server.effective_port)
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.run, name=f"imsim-{self.port}", daemon=True)
        self._thread.start()

    @property
    def state(self) -> SimState:
        return self.sim.state

    @property
    def config(self) -> SimConfig:
        return self.sim.config

    def stop(self) -> None:
        self.server.trigger.pull_trigger(lambda: _shutdown(self.server))
        self._thread.join(timeout=5)
        self.server.task_dispatcher.shutdown(timeout=2)
        self.server.trigger.close()
        self.sim.sender.close()

    def __enter__(self) -> "RunningSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningSim(url={self.url!r})"


def start_in_thread(sim_config: SimConfig, *, host: str = "127.0.0.1", port: int = 0) -> RunningSim:
    """Start the simulator in a daemon thread (port 0 picks a free port)."""
    return RunningSim(*_make(host, port, sim_config))


def serve(host: str, port: int, sim_config: SimConfig) -> None:
    """Serve the simulator in the foreground until SIGTERM or Ctrl-C."""
    server, app = _make(host, port, sim_config)
    sim: Sim = app.extensions["imsim"]

    def _stop(*_args) -> None:
        raise SystemExit(0)  # leaves server.run() in the main thread (it stops the request threads)

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.task_dispatcher.shutdown(timeout=2)
        sim.sender.close()
