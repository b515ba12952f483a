"""reference_impl/api is pure: the standard library and PyYAML only, nothing else of the mesh."""

import ast
import sys
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "reference_impl" / "api"


def test_api_imports_only_stdlib_and_yaml():
    foreign = []
    for module in sorted(API.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "yaml":
                    foreign.append(f"{module.name}: {name}")
    assert foreign == []
