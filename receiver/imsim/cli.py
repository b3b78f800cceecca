"""The `imsim` command: run the Tencent IM simulator in the foreground."""

from __future__ import annotations

import click

from receiver.config import Config, load_config
from receiver.imsim.config import SimConfig
from receiver.imsim.server import serve


@click.command("imsim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=int, help="Port to listen on.")
@click.option("--callback-url", default=None, help="Where to send Group.CallbackAfterGroupDestroyed.")
@click.option("--callback-delay-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="Delay every callback by this many milliseconds.")
@click.option("--duplicate-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of callbacks sent twice.")
@click.option("--drop-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of callbacks never sent.")
@click.option("--reorder", default=0, show_default=True, type=click.IntRange(min=0), is_flag=False,
              flag_value=4, help="Hold callbacks in windows of N (4 if no value) and send each shuffled.")
@click.option("--callback-first", is_flag=True, help="Send the callback and wait for its answer before answering REST.")
@click.option("--error-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of REST calls answered with 10002.")
@click.option("--seed", default=None, type=int, help="Seed for the fault dice and generated group IDs.")
@click.pass_context
def imsim_command(ctx: click.Context, host: str, port: int, callback_url: str | None, callback_delay_ms: int,
                  duplicate_rate: float, drop_rate: float, reorder: int, callback_first: bool,
                  error_rate: float, seed: int | None) -> None:
    """Run the IM simulator (group REST APIs and dismissal callbacks)."""
    config = ctx.find_object(Config) or load_config()
    if config.im_secret_key is None:
        raise click.UsageError("IM_SECRET_KEY must be set: the simulator verifies UserSigs with it")
    sim_config = SimConfig.from_config(
        config, callback_url=callback_url, callback_delay_ms=callback_delay_ms,
        duplicate_rate=duplicate_rate, drop_rate=drop_rate, reorder=reorder,
        callback_first=callback_first, error_rate=error_rate, seed=seed)
    click.echo(f"IM simulator on http://{host}:{port} (SDKAppID {sim_config.sdkappid}, "
               f"callbacks to {callback_url or 'nowhere'}; real IM does not retry callbacks, this one "
               f"retries refused connections {sim_config.callback_retries} times)")
    serve(host, port, sim_config)
