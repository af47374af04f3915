"""What every trigger does after a change, built on first use (never at import: the host imports the trigger
modules at every cold start only to index the functions)."""

from __future__ import annotations


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
