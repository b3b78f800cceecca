"""A local Tencent IM simulator: group REST APIs, UserSig checks, rate limit and dismissal callbacks."""

from receiver.imsim.app import create_sim_app
from receiver.imsim.config import SimConfig
from receiver.imsim.server import RunningSim, serve, start_in_thread

__all__ = ["RunningSim", "SimConfig", "create_sim_app", "serve", "start_in_thread"]
