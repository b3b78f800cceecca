"""The simulator's callback sender: its own threads, with delay/drop/duplicate/reorder faults."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import threading
import time
from urllib.parse import urlencode
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import urllib3

from receiver.imsim.config import SimConfig
from receiver.imsim.state import SimState

COMMAND = "Group.CallbackAfterGroupDestroyed"


def sign(token: str, request_time: str) -> str:
    """Tencent's callback signature: lower-case hex sha256 of token + RequestTime."""
    return hashlib.sha256((token + request_time).encode("utf-8")).hexdigest()


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    body: dict[str, Any] = field(compare=False)
    done: threading.Event | None = field(compare=False, default=None)


class CallbackSender:
    """Queue callbacks and deliver them from worker threads so REST answers never wait on them."""

    def __init__(self, config: SimConfig, state: SimState) -> None:
        self.config = config
        self.state = state
        # Keep-alive to the receiver, one connection per sender thread. Plain urllib3: at 200
        # callbacks a second, requests' per-call work was half of the simulator's CPU.
        self.http = urllib3.PoolManager(maxsize=config.callback_workers, retries=False)
        self._heap: list[_Item] = []
        self._held: list[_Item] = []
        self._held_since: float | None = None
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=config.callback_workers, thread_name_prefix="imsim-callback")
        self._thread = threading.Thread(target=self._run, name="imsim-callback-scheduler", daemon=True)
        self._thread.start()

    def submit(self, body: dict[str, Any]) -> threading.Event:
        """Queue one callback (subject to the fault knobs); the event is set once it is settled."""
        done = threading.Event()
        cfg = self.config
        if not cfg.callback_url:
            done.set()
            return done
        if self.state.chance(cfg.drop_rate):
            self.state.count_callback("dropped")
            done.set()
            return done
        copies = 2 if self.state.chance(cfg.duplicate_rate) else 1
        if copies == 2:
            self.state.count_callback("duplicated")
        self.state.count_callback("queued", copies)
        now = time.monotonic()
        items = [_Item(0.0, next(self._seq), body, done if i == 0 else None) for i in range(copies)]
        with self._cond:
            if cfg.reorder > 1:
                self._held.extend(items)
                if self._held_since is None:
                    self._held_since = now
                if len(self._held) >= cfg.reorder:
                    self._flush_held(now)
            else:
                for item in items:
                    item.due = now + cfg.callback_delay_ms / 1000
                    heapq.heappush(self._heap, item)
            self._cond.notify()
        return done

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.http.clear()

    # -- scheduling -----------------------------------------------------------------------------

    def _flush_held(self, now: float) -> None:
        with self.state.lock:
            self.state.rng.shuffle(self._held)
        for item in self._held:
            item.due = now + self.config.callback_delay_ms / 1000
            item.seq = next(self._seq)  # keep the shuffled order among equal due times
            heapq.heappush(self._heap, item)
        self._held = []
        self._held_since = None

    def _run(self) -> None:
        hold = self.config.reorder_hold_ms / 1000
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._held_since is not None and now - self._held_since >= hold:
                    self._flush_held(now)
                while self._heap and self._heap[0].due <= now:
                    self._pool.submit(self._deliver, heapq.heappop(self._heap))
                waits = [0.5]
                if self._heap:
                    waits.append(self._heap[0].due - now)
                if self._held_since is not None:
                    waits.append(self._held_since + hold - now)
                self._cond.wait(max(min(waits), 0.0005))

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(self, item: _Item) -> None:
        try:
            self._post(item.body)
        finally:
            if item.done is not None:
                item.done.set()

    def _post(self, body: dict[str, Any]) -> None:
        cfg = self.config
        assert cfg.callback_url
        payload = json.dumps(body).encode("utf-8")
        for attempt in range(cfg.callback_retries + 1):
            params = {"SdkAppid": str(cfg.sdkappid), "CallbackCommand": COMMAND, "contenttype": "json",
                      "ClientIP": "127.0.0.1", "OptPlatform": "RESTAPI"}
            if cfg.callback_token:
                request_time = str(int(time.time()))
                params["Sign"] = sign(cfg.callback_token.reveal(), request_time)
                params["RequestTime"] = request_time
            try:
                resp = self.http.request("POST", f"{cfg.callback_url}?{urlencode(params)}", body=payload,
                                         headers={"Content-Type": "application/json"},
                                         timeout=cfg.callback_timeout_seconds)
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError):
                # Simulator-only kindness: real IM sends after-event callbacks once by default.
                if attempt < cfg.callback_retries:
                    self.state.count_callback("retried")
                    backoff = cfg.callback_retry_backoff or (0.0,)
                    time.sleep(backoff[min(attempt, len(backoff) - 1)])
                    continue
                self.state.count_callback("failed")
                return
            except urllib3.exceptions.HTTPError:
                self.state.count_callback("failed")  # timeout: like IM, give up
                return
            self.state.count_callback("sent")
            if resp.status != 200:
                self.state.count_callback("non_200")
            return
