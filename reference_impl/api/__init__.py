"""Kubernetes/Istio/Gateway API manifests and their validation.

Pure: imports only the standard library and PyYAML. Every other part of the reference mesh
reads manifests through this package, so bad input is reported the same way everywhere: one
ManifestError sentence naming file, document, object, field and what to do. `security` holds
the typed model of Istio's security kinds, which the policy engine compiles from.
"""

from . import security
from .errors import ManifestError
from .kinds import KINDS, KindInfo, kind_info, known_kinds, object_key
from .legacy import legacy_warnings
from .loader import load_files, load_text
from .selectors import selector_matches
from .validate import validate

__all__ = [
    "ManifestError", "KINDS", "KindInfo", "kind_info", "known_kinds", "object_key",
    "legacy_warnings", "load_files", "load_text", "security", "selector_matches", "validate",
]
