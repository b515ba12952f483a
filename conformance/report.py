"""The ConformanceReport: what was certified, against what, with which result.

Results arrive through `pytest_runtest_logreport`, which under pytest-xdist the controller
receives for every test run by every worker; the report is written only by the controller.
Each test's features, profiles and level travel in its report's `user_properties`.
"""
from __future__ import annotations

import datetime as dt
import time
from importlib import metadata
from pathlib import Path

import yaml

from conformance import features as registry

API_VERSION = "conformance.ambient-mesh.dev/v1alpha1"
KIND = "ConformanceReport"
NOT_SUPPORTED_PREFIX = "NOT_SUPPORTED:"
EXEMPT_PREFIX = "EXEMPT:"
PASSED, FAILED, SKIPPED, NOT_SUPPORTED = "passed", "failed", "skipped", "notSupported"
# -- the walkthrough's own error (issue 17) --------------------------------------------------
#: a test skipped with this prefix found that the document it follows (the seed article) is
#: wrong for this mesh, and says why: neither the mesh's failure nor a pass. It changes no
#: level result, and appears in statistics and `articleErrorTests` only when it happened.
ARTICLE_ERROR_PREFIX = "ARTICLE_ERROR:"
ARTICLE_ERROR = "articleError"
PROP = "conformance."


def suite_version() -> str:
    try:
        return metadata.version("ambient-conformance")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _fail_reason(report) -> str:
    text = getattr(report, "longreprtext", "") or str(report.longrepr)
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    if lines:
        summary = " ".join(ln[1:].strip() for ln in lines[:3])
    else:
        summary = (text.strip().splitlines() or [""])[-1]
    return f"{report.when}: {summary}"[:500]


class TestResult:
    def __init__(self, nodeid: str, props: dict):
        self.nodeid = nodeid
        self.props = props
        self.outcome: str | None = None
        self.reason = ""

    def record(self, report) -> None:
        if self.outcome == FAILED:
            return
        if report.failed:
            self.outcome, self.reason = FAILED, _fail_reason(report)
        elif report.skipped:
            reason = _skip_reason(report)
            self.outcome = NOT_SUPPORTED if reason.startswith(NOT_SUPPORTED_PREFIX) else \
                ARTICLE_ERROR if reason.startswith(ARTICLE_ERROR_PREFIX) else SKIPPED
            self.reason = reason
        elif report.when == "call" and report.passed and self.outcome is None:
            self.outcome = PASSED

    @property
    def features(self) -> list[str]:
        return [f for f in self.props.get(PROP + "features", "").split(",") if f]

    @property
    def profiles(self) -> list[str]:
        return [p for p in self.props.get(PROP + "profiles", "").split(",") if p]

    @property
    def level(self) -> str:
        return self.props.get(PROP + "level", registry.CORE)


def level_result(tests: list[TestResult], level: str) -> str:
    outcomes = [t.outcome for t in tests]
    if FAILED in outcomes or None in outcomes:
        return "failure"
    if SKIPPED in outcomes or (level == registry.CORE and NOT_SUPPORTED in outcomes):
        return "partial"
    if PASSED not in outcomes and level == registry.CORE:
        return "partial"
    return "success"


def _stats(tests: list[TestResult]) -> dict:
    stats = {k: sum(1 for t in tests if t.outcome == k) for k in (PASSED, FAILED, SKIPPED, NOT_SUPPORTED)}
    article_errors = sum(1 for t in tests if t.outcome == ARTICLE_ERROR)
    return {**stats, ARTICLE_ERROR: article_errors} if article_errors else stats


def _listed(tests: list[TestResult], outcome: str) -> list[dict]:
    return [{"name": t.nodeid, "reason": t.reason} for t in tests if t.outcome == outcome]


def build(results: list[TestResult], *, implementation: str, target: str, supported: frozenset[str],
          wanted_profiles: list[str], duration: float, date: dt.datetime | None = None) -> dict:
    """The report as a plain dict (the YAML document)."""
    name, _, version = implementation.partition("/")
    profiles = []
    for profile in registry.PROFILES:
        if wanted_profiles and profile not in wanted_profiles:
            continue
        in_profile = [t for t in results if profile in t.profiles]
        if not in_profile and profile not in wanted_profiles:
            continue
        entry: dict = {"name": profile}
        for level in (registry.CORE, registry.EXTENDED):
            tests = [t for t in in_profile if t.level == level]
            if not tests:
                continue
            section = {"result": level_result(tests, level), "statistics": _stats(tests),
                       "failedTests": _listed(tests, FAILED), "skippedTests": _listed(tests, SKIPPED),
                       "notSupportedTests": _listed(tests, NOT_SUPPORTED)}
            if any(t.outcome == ARTICLE_ERROR for t in tests):
                section["articleErrorTests"] = _listed(tests, ARTICLE_ERROR)
            if level == registry.EXTENDED:
                names = sorted({f.name for f in registry.features_in(profile) if f.level == level})
                section["supportedFeatures"] = [n for n in names if n in supported]
                section["unsupportedFeatures"] = [n for n in names if n not in supported]
            entry[level] = section
        if not in_profile:
            entry["core"] = {"result": "partial", "statistics": _stats([]), "failedTests": [],
                             "skippedTests": [], "notSupportedTests": [],
                             "note": "no test of this profile was collected"}
        profiles.append(entry)
    date = date or dt.datetime.now(dt.timezone.utc)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "date": date.replace(microsecond=0).isoformat(),
        "implementation": {"name": name, "version": version or "unknown"},
        "suiteVersion": suite_version(),
        "target": target,
        "durationSeconds": round(duration, 1),
        "profiles": profiles,
        "statistics": _stats(results),
    }


class ReportCollector:
    """Registered on the controller only (see plugin.pytest_configure)."""

    def __init__(self, config, supported: frozenset[str]):
        self.config = config
        self.supported = supported
        self.results: dict[str, TestResult] = {}
        self.implementation: str | None = config.getoption("implementation")
        self.started = time.monotonic()
        self.written: Path | None = None
        self.document: dict | None = None

    def pytest_runtest_logreport(self, report) -> None:
        props = {str(k): str(v) for k, v in (report.user_properties or [])}
        if PROP + "features" not in props:
            return
        result = self.results.setdefault(report.nodeid, TestResult(report.nodeid, props))
        result.props.update(props)
        if not self.implementation and props.get(PROP + "implementation"):
            self.implementation = props[PROP + "implementation"]
        result.record(report)

    def _with_reasons(self, target: str) -> None:
        """A NOT_SUPPORTED test's reason, with why the implementation cannot do each feature when
        the target says (issue 16: what the Envoy waypoint's translation cannot express)."""
        from conformance.targets import target_class
        reasons = getattr(target_class(target), "not_supported_reasons", dict)()
        for result in self.results.values():
            if result.outcome == NOT_SUPPORTED:
                why = [f"{f}: {reasons[f]}" for f in result.features if f in reasons]
                if why and not result.reason.endswith(why[-1]):
                    result.reason = f"{result.reason} ({'; '.join(why)})"

    def pytest_sessionfinish(self, session) -> None:
        target = self.config.getoption("target")
        self._with_reasons(target)
        implementation = self.implementation or f"unknown ({target} target never started)/unknown"
        self.document = build(list(self.results.values()), implementation=implementation, target=target,
                              supported=self.supported, wanted_profiles=self.config.getoption("profile"),
                              duration=time.monotonic() - self.started)
        path = Path(self.config.getoption("report"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.document, sort_keys=False, width=120))
        self.written = path

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.written or not self.document:
            return
        tr = terminalreporter
        tr.section("ambient conformance")
        for p in self.document["profiles"]:
            levels = ", ".join(f"{lvl} {p[lvl]['result']}" for lvl in (registry.CORE, registry.EXTENDED) if lvl in p)
            tr.write_line(f"{p['name']}: {levels}")
        s = self.document["statistics"]
        article = f", the article's error {s[ARTICLE_ERROR]}" if s.get(ARTICLE_ERROR) else ""
        tr.write_line(f"passed {s[PASSED]}, failed {s[FAILED]}, skipped {s[SKIPPED]}, "
                      f"not supported {s[NOT_SUPPORTED]}{article}; report written to {self.written}")
