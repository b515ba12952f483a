"""Entering a pod's network namespace from the node proxy (reference_impl.netns does the setns).

setns(2) changes the namespace of the calling thread only, so the event loop thread enters the
pod namespace, creates its sockets there (a socket stays in the namespace it was created in)
and comes straight back, without awaiting in between.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..netns import setns


@contextlib.contextmanager
def entered(name_or_path: str | None) -> Iterator[None]:
    """Run the body with this thread inside the namespace; None means stay where we are."""
    if name_or_path is None:
        yield
        return
    with setns(name_or_path):
        yield
