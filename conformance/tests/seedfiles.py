"""The seed article's manifests (fixtures/seed/), shared by the SEED-WALKTHROUGH tests."""
from __future__ import annotations

from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "seed"


def seed(name: str) -> Path:
    path = SEED / name
    if not path.is_file():
        pytest.fail(f"{path}: the seed manifest is missing; the walkthrough needs fixtures/seed/ from the repository")
    return path
