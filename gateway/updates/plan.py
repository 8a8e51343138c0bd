"""A rollout's plan and its verdicts, without I/O: the stages a rollout offers its bundle in
(a canary group, then shares of the rest), when a device's update has failed, and whether a
stage goes on, waits or halts the rollout.
"""
import math
from collections.abc import Sequence

from gateway.store.rollouts import FAILED, IN_FLIGHT, SKIPPED, SUCCEEDED, DeviceUpdate

GO_ON, WAIT, HALT = "go on", "wait", "halt"


class PlanError(ValueError):
    """A plan that cannot be run: str() says why."""


def stages(devices: Sequence[str], canary: Sequence[str],
           percents: Sequence[int]) -> list[list[str]]:
    """The devices of each stage: the canary group (if any), then the rest in order, each
    stage taking them up to its cumulative percentage of the rest (the last must be 100)."""
    if not devices:
        raise PlanError("no devices to update")
    if len(set(devices)) != len(devices):
        raise PlanError("a device is listed twice")
    stray = [d for d in canary if d not in devices]
    if stray:
        raise PlanError("canary device %s is not among the devices to update" % stray[0])
    rest = [d for d in devices if d not in set(canary)]
    if rest and not percents:
        raise PlanError("give the stages after the canary group as percentages, e.g. [25, 100]")
    if any(isinstance(p, bool) or not isinstance(p, int) or not 0 < p <= 100 for p in percents):
        raise PlanError("each stage is a whole percentage 1..100 of the devices after the "
                        "canary group")
    if list(percents) != sorted(set(percents)) or (percents and percents[-1] != 100):
        raise PlanError("the percentages must rise and end at 100, e.g. [25, 50, 100]")
    out = [list(canary)] if canary else []
    taken = 0
    for p in percents if rest else ():
        upto = math.ceil(p * len(rest) / 100)
        if upto > taken:
            out.append(rest[taken:upto])
            taken = upto
    return out


def timed_out(rows: Sequence[DeviceUpdate], confirm_seconds: float, now: float) -> list[str]:
    """Devices offered the update more than confirm_seconds ago that have not confirmed it."""
    return [r.device for r in rows if r.state in IN_FLIGHT and r.offered_at is not None
            and now - r.offered_at > confirm_seconds]


def verdict(rows: Sequence[DeviceUpdate], max_failed: float, accepted: bool) -> tuple[str, str]:
    """(GO_ON, WAIT or HALT, why) for the rows of one stage. It halts as soon as more than
    max_failed of its devices failed (refused, rolled back, not confirmed in time), unless a
    resume accepted this stage's failures; it goes on once every device is done."""
    failed = [r for r in rows if r.state in FAILED]
    if rows and not accepted and len(failed) / len(rows) > max_failed:
        return HALT, "%d of %d device(s) of this stage failed (more than %g%%): %s" % (
            len(failed), len(rows), round(100 * max_failed, 1),
            "; ".join("%s %s%s" % (r.device, r.state, ": " + r.why if r.why else "")
                      for r in failed))
    if all(r.state in SUCCEEDED + FAILED + (SKIPPED,) for r in rows):
        return GO_ON, "%d of %d device(s) confirmed" % (len(rows) - len(failed), len(rows))
    return WAIT, "%d of %d device(s) done" % (
        sum(r.state not in IN_FLIGHT + ("waiting",) for r in rows), len(rows))
