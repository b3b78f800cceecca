"""Operator commands: `replay` quarantined callbacks, `purge` old records, print a `usersig`."""

from __future__ import annotations

from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import with_appcontext

from receiver.db import get_database
from receiver.ops.durations import parse_duration


class DurationType(click.ParamType):
    """A duration such as 90d, 12h or 30m."""

    name = "duration"

    def convert(self, value, param, ctx):
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class MomentType(click.ParamType):
    """A point in time: ISO 8601 (UTC unless an offset is given) or a duration ago (e.g. 2d)."""

    name = "time"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        try:
            return datetime.now(timezone.utc) - parse_duration(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is neither an ISO 8601 time (2026-01-31T12:00:00Z) nor a duration ago (2d, 6h)",
                      param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@click.command("replay")
@click.option("--since", type=MomentType(), help="Only requests received at or after this time (ISO 8601, or 2d = two days ago).")
@click.option("--dry-run", is_flag=True, help="Report what would be stored; change nothing.")
@with_appcontext
def replay_command(since, dry_run) -> None:
    """Re-validate quarantined callbacks; store those that pass now."""
    from receiver.ops.replay import replay_quarantined

    config = current_app.config["RECEIVER"]
    with get_database().session_scope() as session:
        report = replay_quarantined(session=session, sdkappid=config.im_sdkappid, since=since, dry_run=dry_run)
    verb = "would store" if dry_run else "stored"
    click.echo(f"examined {report.examined} quarantined request(s): {verb} {report.stored}, "
               f"duplicates {report.duplicates}, ignored {report.ignored}, still invalid {report.still_invalid}")
    for reason, n in report.reasons.most_common(5):
        click.echo(f"  {n} × {reason}")


@click.command("purge")
@click.option("--older-than", "older_than", type=DurationType(), required=True,
              help="Delete records older than this (e.g. 90d, 12h, 30m).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@with_appcontext
def purge_command(older_than, dry_run) -> None:
    """Delete records older than a cutoff (never a dismissal)."""
    from receiver.ops.purge import purge

    cutoff = datetime.now(timezone.utc) - older_than
    with get_database().session_scope() as session:
        report = purge(session=session, cutoff=cutoff, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} (before {cutoff.isoformat(timespec='seconds')}): {report.quarantined} quarantined request(s), "
               f"{report.callbacks} unlinked callback(s), {report.attempts} dismissal attempt(s); "
               f"kept {report.callbacks_kept_as_evidence} callback(s) that are a dismissal's evidence")


@click.command("usersig")
@click.option("--identifier", help="Account to sign for (default: IM_ADMIN_IDENTIFIER).")
@click.option("--expire", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Seconds the UserSig stays valid.")
@with_appcontext
def usersig_command(identifier, expire) -> None:
    """Print a UserSig (admin by default) for manual REST calls to IM."""
    from receiver.ops.usersig import UserSigRefused, issue_usersig

    try:
        click.echo(issue_usersig(current_app.config["RECEIVER"], identifier=identifier, expire_seconds=expire))
    except UserSigRefused as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = (replay_command, purge_command, usersig_command)
