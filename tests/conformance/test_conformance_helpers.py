"""Pure parts of the suite: curl outcome parsing (from real curl runs on loopback), the
convergence helper, manifest loading, the pcap reader (on a real loopback capture), and that
docs/CONFORMANCE.md is up to date."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conformance import curl, manifests, pcap
from conformance.convergence import NotConverged, eventually

REPO = Path(__file__).resolve().parents[2]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(int(self.path.strip("/") or 200))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def server():
    s = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s.server_address[1]
    s.shutdown()
    s.server_close()


def test_one_curl_process_reports_each_request(server):
    urls = [f"http://127.0.0.1:{server}/204", f"http://127.0.0.1:{server}/503", "http://127.0.0.1:1/"]
    done = subprocess.run(curl.curl_argv(urls, headers={"X-A": "b"}, max_time=2), capture_output=True, text=True)
    outcomes = [r.outcome for r in curl.parse_output(done.stdout, 3)]
    assert outcomes == [204, 503, curl.REFUSED]


def test_parse_maps_exit_codes_and_pads_missing_lines():
    lines = "\n".join(f"ac-outcome: 000 {code} 0 0.1 msg" for code in (6, 28, 52, 56, 18, 99))
    assert [r.outcome for r in curl.parse_output(lines, 7)] == [
        curl.DNS, curl.TIMEOUT, curl.RESET, curl.RESET, curl.RESET, curl.ERROR, curl.ERROR]
    partial = curl.parse_output("ac-outcome: 200 18 3 2.0 transfer closed", 1)[0]
    assert (partial.outcome, partial.bytes_received) == (curl.RESET, 3)


def test_bodies_come_back_with_their_outcomes(server):
    urls = [f"http://127.0.0.1:{server}/200", f"http://127.0.0.1:{server}/201", "http://127.0.0.1:1/"]
    done = subprocess.run(curl.curl_argv(urls, max_time=2, body=True), capture_output=True, text=True)
    responses = curl.parse_output(done.stdout, 3, body=True)
    assert [(r.outcome, r.body) for r in responses] == [(200, "ok"), (201, "ok"), (curl.REFUSED, "")]


def test_a_timeout_is_never_an_l4_deny():
    assert curl.TIMEOUT not in curl.L4_REFUSALS and {curl.RESET, curl.REFUSED} <= curl.L4_REFUSALS


def test_a_deny_that_converges_only_through_timeouts_does_not_count():
    from conformance.scenario import denied, why_not_denied
    batches = iter([[curl.RESET, curl.RESET, curl.TIMEOUT]] * 100)  # denials, broken by stalls
    with pytest.raises(NotConverged, match="timed out: a deny must be a prompt refusal"):
        eventually(lambda: next(batches), denied, "stalling mesh", timeout=0.2, interval=0.01,
                   why_not=why_not_denied)
    assert eventually(lambda: [curl.RESET, curl.REFUSED, curl.RESET], denied, "refusing mesh",
                      timeout=1, interval=0, why_not=why_not_denied) == [curl.RESET, curl.REFUSED, curl.RESET]


def test_eventually_needs_consecutive_successes():
    batches = iter([[1, 0, 1], [1, 1], [0]])
    assert eventually(lambda: next(batches), bool, "x", n_consecutive=3, timeout=5, interval=0) == [1, 1, 1]
    started = time.monotonic()
    with pytest.raises(NotConverged, match=r"flaky: not 2 consecutive .* last observations \[1, 0, 1, 0"):
        eventually(lambda: [1, 0], bool, "flaky", n_consecutive=2, timeout=0.3, interval=0.05)
    assert time.monotonic() - started < 3


def test_manifests_load_paths_text_and_dicts_with_clear_errors(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n")
    objs = manifests.load([f, "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}])
    assert [o["metadata"]["name"] for o in objs] == ["a", "b", "c"]
    with pytest.raises(manifests.ManifestError, match="missing.yaml: cannot read"):
        manifests.load(str(tmp_path / "missing.yaml"))
    with pytest.raises(manifests.ManifestError, match="Service has no metadata.name"):
        manifests.load({"apiVersion": "v1", "kind": "Service", "metadata": {}})


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_pcap_reader_on_a_real_loopback_capture(server, tmp_path):
    out, err = tmp_path / "lo.pcap", tmp_path / "stderr"
    with open(err, "w") as err_file:
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-w", str(out),
                                 f"tcp port {server}"], stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in err.read_text():
            assert dump.poll() is None and time.monotonic() < deadline, f"tcpdump did not start: {err.read_text()}"
            time.sleep(0.05)
        # "listening on" comes before the kernel hands packets over, and SIGTERM drops what tcpdump
        # has not read yet (CI saw an empty file): resend until the request is in the file.
        def written() -> bool:
            return out.exists() and b"X-Marker: m-42" in out.read_bytes()
        deadline = time.monotonic() + 10
        while not written() and time.monotonic() < deadline:
            subprocess.run(curl.curl_argv([f"http://127.0.0.1:{server}/200"], headers={"X-Marker": "m-42"}),
                           check=True, capture_output=True)
            until = time.monotonic() + 1.0
            while not written() and time.monotonic() < until:
                time.sleep(0.02)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    segments = pcap.tcp_segments(out.read_bytes())
    assert segments and all(server in (s.sport, s.dport) for s in segments)
    assert any(b"X-Marker: m-42" in s.payload for s in segments)
    with pytest.raises(pcap.PcapError):
        pcap.tcp_segments(b"not a pcap file at all, no")


def test_conformance_doc_is_fresh():
    done = subprocess.run([sys.executable, "-m", "conformance.docs", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
