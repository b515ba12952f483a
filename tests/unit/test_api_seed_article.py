"""fixtures/seed is the article's text, verbatim except for the two documented repairs.

Each fixture's YAML (its leading comment lines dropped, the restored issuer put back to the
article's mangled form) must appear as one contiguous run of lines in the seed article. The
article's lost line breaks only ever glue text after a file's last line or before its first
line, so a verbatim copy is a substring of the article.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed"
ARTICLE_NAME = "seeds/000_9657fc67727ed5c6.txt"
# CI lays shared/ beside the clone; developers have it at /work/shared.
CANDIDATES = [ROOT.parent / "shared" / ARTICLE_NAME, Path("/work/shared") / ARTICLE_NAME]
ARTICLE = next((p for p in CANDIDATES if p.is_file()), None)

FROM_ARTICLE = ["httpbin-legacy.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml",
                "waypoint.yaml", "l4-policy.yaml", "rogue-client.yaml", "jwt-policy.yaml",
                "l7-authz-policy.yaml"]


def _body(name: str) -> str:
    lines = (SEED / name).read_text().splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    # The obfuscator's text has a no-break space: "[email\u00a0protected]".
    return "\n".join(lines).replace("testing@secure.istio.io", "[email\u00a0protected]")


@pytest.mark.skipif(ARTICLE is None, reason="the seed article (shared/seeds) is not on this machine")
@pytest.mark.parametrize("name", FROM_ARTICLE)
def test_fixture_is_the_article_text(name):
    article = ARTICLE.read_text()
    body = _body(name)
    assert body.count("\n") >= 10
    assert body in article, f"{name} differs from the article's text"
    assert f"# {name}" in article


@pytest.mark.skipif(ARTICLE is None, reason="the seed article (shared/seeds) is not on this machine")
def test_namespace_labels_are_the_articles_kubectl_commands():
    article = ARTICLE.read_text()
    assert "kubectl label ns legacy-apps istio-injection=enabled" in article
    assert "kubectl label ns ambient-apps istio.io/dataplane-mode=ambient" in article
    text = (SEED / "namespaces.yaml").read_text()
    assert "istio-injection: enabled" in text and "istio.io/dataplane-mode: ambient" in text
