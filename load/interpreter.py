"""Which Python runs a benchmark: part of its conditions. The interpreter's build moves the
data path's figures by a fifth (README, "Data-plane hop", round 7): a shared libpython (pyenv's
`--enable-shared` build) calls its own functions through the PLT, where an executable that links
libpython in (Debian's /usr/bin/python3.11) calls them directly."""

from __future__ import annotations

import os
import sys


def describe() -> str:
    with open("/proc/self/maps") as maps:
        shared = sorted({line.split()[-1] for line in maps if "/libpython" in line})
    linked = f"libpython shared ({shared[0]})" if shared else "libpython linked into the executable"
    return f"Python {sys.version.split()[0]} at {os.path.realpath(sys.executable)}, {linked}"
