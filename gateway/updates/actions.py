"""What the owner does to rollouts (the admin page's Updates page, /api/updates): start one,
resume a halted one, abort one. Each is a change in the database; the engine (engine.py),
in whichever worker holds the lease, acts on it at its next round.
"""
import os

from gateway.store.rollouts import (
    ABORTED,
    HALTED,
    RUNNING,
    SUCCEEDED,
    Rollout,
    Rollouts,
)
from gateway.updates.plan import PlanError, stages


class Unknown(PlanError):
    """The plan names a bundle or device this gateway does not have."""


class Busy(PlanError):
    """A device of the plan is in a rollout that has not ended."""


DEFAULT_MAX_FAILED = 0.2
DEFAULT_CONFIRM_SECONDS = 900.0


def create(store, digest, devices, canary, percents, max_failed=DEFAULT_MAX_FAILED,
           confirm_seconds=DEFAULT_CONFIRM_SECONDS, force=False, now=0.0):
    """A new running rollout of bundle `digest` (PlanError if it cannot be run)."""
    rollouts = Rollouts(store.db)
    if rollouts.bundle(digest) is None:
        raise Unknown("no bundle %s: upload it first" % digest[:12])
    if not 0 <= max_failed < 1:
        raise PlanError("max_failed must be a share from 0 to below 1 (0.2: more than 20% of "
                        "a stage failing halts the rollout)")
    if not 10 <= confirm_seconds <= 86400:
        raise PlanError("confirm_seconds must be 10..86400")
    active = {d["id"] for d in store.devices() if d["status"] == "active"}
    unknown = [d for d in devices if d not in active]
    if unknown:
        raise Unknown("%s is not an active device of this gateway" % unknown[0])
    busy = busy_devices(rollouts) & set(devices)
    if busy:
        raise Busy("%s is in a rollout that has not ended: abort it or wait for it"
                   % sorted(busy)[0])
    plan = stages(devices, canary, percents)
    r = Rollout(os.urandom(8).hex(), digest, RUNNING, 0, len(plan), float(max_failed),
                float(confirm_seconds), bool(force), -1, now, now, None)
    with store.transaction():
        rollouts.add(r, plan, now)
    return r


def busy_devices(rollouts):
    """Devices in a running or halted rollout that have not confirmed."""
    return {d.device for r in rollouts.open() for d in rollouts.devices(r.id)
            if d.state not in SUCCEEDED}


def abort(rollouts, rollout_id, now):
    """Stop a rollout: nothing more is offered; devices already installing finish on their
    own (each confirms or rolls back by itself). False if it had ended already."""
    if not rollouts.set_status(rollout_id, (RUNNING, HALTED), ABORTED, now,
                               "aborted from the admin page"):
        return False
    rollouts.skip_waiting(rollout_id, now)
    return True


def resume(rollouts, rollout_id, now):
    """Let a halted rollout go on: its current stage's failures are accepted, the next stages
    are judged as before. False if it was not halted."""
    r = rollouts.get(rollout_id)
    if r is None or r.status != HALTED:
        return False
    return rollouts.set_status(rollout_id, (HALTED,), RUNNING, now, None, accepted=r.stage)
