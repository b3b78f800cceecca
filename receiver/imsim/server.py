"""Run the IM simulator: a threaded werkzeug server, in the foreground or in a background thread."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from receiver.imsim.app import create_sim_app
from receiver.imsim.config import SimConfig
from receiver.imsim.rest import Sim
from receiver.imsim.state import SimState


class _KeepAliveHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections, like Tencent's gateway


class _QuietHandler(_KeepAliveHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _make(host: str, port: int, sim_config: SimConfig, quiet: bool) -> tuple[BaseWSGIServer, Sim]:
    app = create_sim_app(sim_config)
    handler = _QuietHandler if quiet else _KeepAliveHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    return server, app.extensions["imsim"]


class RunningSim:
    """A simulator serving from a background thread; `stop()` shuts it down."""

    def __init__(self, server: BaseWSGIServer, sim: Sim) -> None:
        self.server = server
        self.sim = sim
        self.host, self.port = server.server_address[0], server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"imsim-{self.port}", daemon=True)
        self._thread.start()

    @property
    def state(self) -> SimState:
        return self.sim.state

    @property
    def config(self) -> SimConfig:
        return self.sim.config

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=2)
        self.sim.sender.close()

    def __enter__(self) -> "RunningSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningSim(url={self.url!r})"


def start_in_thread(sim_config: SimConfig, *, host: str = "127.0.0.1", port: int = 0,
                    quiet: bool = True) -> RunningSim:
    """Start the simulator in a daemon thread (port 0 picks a free port)."""
    server, sim = _make(host, port, sim_config, quiet)
    return RunningSim(server, sim)


def serve(host: str, port: int, sim_config: SimConfig, *, quiet: bool = False) -> None:
    """Serve the simulator in the foreground until interrupted."""
    server, sim = _make(host, port, sim_config, quiet)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sim.sender.close()
