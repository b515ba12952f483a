"""The proxies' allocator setting: freed large buffers are reused, not handed back to the kernel
and faulted in again (reference_impl/process/allocator.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reference_impl.process import allocator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A bulk stream's buffers as they come and go: a read of about 256 KiB, a 1 MiB frame and its
# copy, and a small object that outlives them (glibc's defaults adapt to one size freed and
# allocated again, not to this)
_FAULTS = """
import resource, sys
sys.path.insert(0, {repo!r})
if sys.argv[1] == "tuned":
    from reference_impl.process.allocator import keep_large_buffers
    assert keep_large_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
keep = []
for i in range(300):
    read = bytes(262144 + (i % 7) * 4096)
    frame = bytearray(1 << 20)
    keep.append(b"x" * 100)
    del read
    copy = bytes(frame)
    del frame, copy
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _FAULTS.format(repo=REPO), mode], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_buffers_are_reused_instead_of_faulted_in_again():
    untouched, tuned = _page_faults("default"), _page_faults("tuned")
    # glibc's defaults fault the pages of every large buffer in afresh (here 120-500 a round)
    assert untouched > 300 * 50, f"glibc's defaults faulted only {untouched} pages in 300 rounds"
    assert tuned < 300 * 20, f"with the proxy's thresholds, 300 rounds still faulted {tuned} pages"


def test_the_operators_own_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_large_buffers() is False
