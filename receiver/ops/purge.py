"""Delete old callback requests and dismissal attempts, never what a dismissal still relies on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from receiver.models import OPEN_STATUSES, Callback, CallbackState, Dismissal, DismissalAttempt


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    quarantined: int
    callbacks: int
    attempts: int
    # Old accepted callbacks kept because a dismissal names them as its evidence.
    callbacks_kept_as_evidence: int
    dry_run: bool


def _linked(callback_id_column):
    # A callback's members hang off the dismissal it confirmed, which names it: linked either way.
    return exists().where(Dismissal.callback_id == callback_id_column)


def purge(*, session: Session, cutoff: datetime, dry_run: bool = False) -> PurgeReport:
    """Delete, if received/started before `cutoff`: quarantined requests, accepted callbacks no
    dismissal refers to, and attempts of dismissals that are final; commit unless `dry_run`.

    Dismissal rows are never deleted. An accepted callback linked to a dismissal is its evidence
    (and its member list): detaching it would let the matcher tie a later callback for a re-used
    group ID to that old dismissal, so such callbacks are counted and kept.
    """
    old = Callback.received_at < cutoff
    quarantined = (Callback.state == CallbackState.QUARANTINED, old)
    orphans = (Callback.state == CallbackState.ACCEPTED, old, ~_linked(Callback.id))
    kept = (Callback.state == CallbackState.ACCEPTED, old, _linked(Callback.id))
    open_ids = select(Dismissal.id).where(Dismissal.status.in_(OPEN_STATUSES))
    attempts = (DismissalAttempt.started_at < cutoff, DismissalAttempt.dismissal_id.not_in(open_ids))

    def count(model, where) -> int:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

    counts = dict(
        quarantined=count(Callback, quarantined), callbacks=count(Callback, orphans),
        attempts=count(DismissalAttempt, attempts), callbacks_kept_as_evidence=count(Callback, kept),
    )
    if not dry_run:
        sync = {"synchronize_session": False}
        counts["quarantined"] = session.execute(delete(Callback).where(*quarantined).execution_options(**sync)).rowcount
        counts["callbacks"] = session.execute(delete(Callback).where(*orphans).execution_options(**sync)).rowcount
        counts["attempts"] = session.execute(delete(DismissalAttempt).where(*attempts).execution_options(**sync)).rowcount
        session.commit()
    else:
        session.rollback()
    return PurgeReport(cutoff=cutoff, dry_run=dry_run, **counts)
