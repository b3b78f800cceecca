"""Settings of the IM simulator: the app it pretends to be and its fault knobs."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.config import Config, Secret


@dataclass(frozen=True)
class SimConfig:
    """What the simulator checks requests against, and how badly it delivers callbacks."""

    sdkappid: int
    secret_key: Secret
    admin_identifier: str = "administrator"
    callback_url: str | None = None
    callback_token: Secret | None = None
    callback_delay_ms: int = 0
    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    reorder: int = 0  # window size: hold this many callbacks, then send them shuffled
    reorder_hold_ms: int = 200  # never hold a partial reorder window longer than this
    callback_first: bool = False
    error_rate: float = 0.0
    seed: int | None = None
    rate_limit: int = 200  # calls per calendar second per API; beyond it: 60007
    callback_timeout_seconds: float = 2.0  # Tencent's documented callback timeout
    # Real IM does not retry after-event callbacks by default; the simulator retries a refused
    # connection a few times so a receiver that is still starting does not lose events.
    callback_retries: int = 3
    callback_retry_backoff: tuple[float, ...] = (0.1, 0.3, 1.0)
    callback_workers: int = 32  # IM delivers from many servers at once; one connection each

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "drop_rate", "error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.reorder < 0 or self.callback_delay_ms < 0 or self.rate_limit < 1:
            raise ValueError("reorder and callback_delay_ms must be >= 0, rate_limit >= 1")
        if not self.secret_key:
            raise ValueError("the simulator needs IM_SECRET_KEY to verify UserSigs")

    def __repr__(self) -> str:
        return (f"SimConfig(sdkappid={self.sdkappid}, admin_identifier={self.admin_identifier!r}, "
                f"callback_url={self.callback_url!r}, token={'set' if self.callback_token else 'unset'})")

    @classmethod
    def from_config(cls, config: Config, **knobs: object) -> "SimConfig":
        """Take the app identity and callback token from the service's Config.

        Not its IM_RATE_LIMIT_PER_SECOND: that is our ceiling, and IM's own is 200 per API
        whatever we set (CONTRACT §6). A dispatcher set above it must meet 60007 here as it
        would at Tencent.
        """
        if config.im_secret_key is None:
            raise ValueError("IM_SECRET_KEY is not set: the simulator cannot verify UserSigs")
        token = config.im_callback_tokens[0] if config.im_callback_tokens else None
        params: dict[str, object] = {
            "sdkappid": config.im_sdkappid, "secret_key": config.im_secret_key,
            "admin_identifier": config.im_admin_identifier, "callback_token": token,
        }
        params.update(knobs)
        return cls(**params)  # type: ignore[arg-type]
