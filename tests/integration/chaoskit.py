"""Running a chaos experiment the way a user does, for the tests: Chaos Toolkit's own `chaos run`
in a subprocess (chaoslib runs an experiment on the main thread), against a named reference
cluster, optionally with the experiment changed first (a deliberately broken variant)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "chaos" / "experiments"


@dataclass
class Run:
    journal: dict
    out: pathlib.Path
    log: str

    @property
    def numbers(self) -> dict:
        return json.loads((self.out / "numbers.json").read_text())

    def probe(self, phase: str, name: str):
        """The output of steady-state probe `name` in `phase` (before/after)."""
        for p in self.journal["steady_states"][phase]["probes"]:
            if p["activity"]["name"] == name:
                return p["output"]
        raise AssertionError(f"no probe {name} ran {phase} the method:\n{self.log[-3000:]}")

    def method(self, name: str):
        for r in self.journal["run"]:
            if r["activity"]["name"] == name:
                return r["output"]
        raise AssertionError(f"no activity {name} in the method:\n{self.log[-3000:]}")

    def traffic(self, recording: str = "method") -> dict:
        return json.loads((self.out / f"traffic-{recording}.json").read_text())["streams"]

    def events(self) -> list[dict]:
        return json.loads((self.out / "events.json").read_text())

    def assert_held(self) -> None:
        """Completed, not deviated, the steady state met before and after the method."""
        j = self.journal
        assert j["status"] == "completed" and not j["deviated"], \
            f"{self.out.name}: status {j['status']}, deviated {j['deviated']}:\n{self.log[-3000:]}"
        assert j["steady_states"]["before"]["steady_state_met"], self.log[-3000:]
        assert j["steady_states"]["after"]["steady_state_met"], self.log[-3000:]


def run(name: str, cluster: str, tmp: pathlib.Path, env: dict | None = None, change=None,
        extra_pythonpath: str = "") -> Run:
    """`chaos run` experiment `name` on `cluster`; `change(experiment dict)` edits a copy first."""
    path = EXPERIMENTS / f"{name}.yaml"
    if change is not None:
        experiment = yaml.safe_load(path.read_text())
        change(experiment)
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    out_root = tmp / "out"
    full_env = dict(os.environ, AMBIENT_TARGET="reference", AMBIENT_CLUSTER=cluster,
                    AMBIENT_CHAOS_OUT=str(out_root), AMBIENT_CHAOS_RUN="test", **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), extra_pythonpath, os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "chaostoolkit", "--log-file", str(tmp / "chaos.log"), "run",
                           "--journal-path", str(tmp / "journal.json"), str(path)],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=240)
    log = done.stdout + done.stderr
    journal_path = tmp / "journal.json"
    assert journal_path.exists(), f"chaos run wrote no journal (exit {done.returncode}):\n{log[-3000:]}"
    return Run(json.loads(journal_path.read_text()), out_root / "test" / name, log)
