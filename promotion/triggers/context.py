"""What every trigger does after a change, built on first use (never at import: the host imports the trigger
modules at every cold start only to index the functions)."""

from __future__ import annotations

import logging
import os
import re

# Six fields (seconds first), as the Functions timer trigger expects; the host validates the rest.
_NCRONTAB = re.compile(r"\S+( \S+){5}")


def schedule_setting(setting: str, default: str, fallback: str) -> str:
    """A timer's schedule from an app setting (an NCRONTAB expression), read when the host indexes the functions.

    Failing here would fail the indexing of every function, so a malformed value keeps the default and says why."""
    schedule = " ".join(os.environ.get(setting, "").split())
    if not schedule:
        return default
    if not _NCRONTAB.fullmatch(schedule):
        logging.getLogger("promotion").error("setting %s is not a six-field NCRONTAB expression; %s", setting, fallback)
        return default
    return schedule


def publish_soon() -> None:
    """Try to publish the lifecycle events this invocation recorded: one short attempt, never an error. What it
    does not send, the publish_lifecycle_events timer sends within a minute."""
    import logging

    from promotion import service, wiring

    try:
        publisher = wiring.publisher(quick=True)
    except Exception as error:  # a misconfigured topic: reported loudly by the timer, never here
        logging.getLogger("promotion").warning("lifecycle events are not published right away: %s", error)
        return
    service.publish_soon(wiring.store(), publisher, clock=wiring.clock())
