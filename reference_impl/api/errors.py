"""The one error type bad manifests raise, with the location a user needs to fix them."""

from __future__ import annotations


def format_path(path) -> str:
    """('spec', 'ports', 0, 'port') -> 'spec.ports[0].port'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


class ManifestError(ValueError):
    """A manifest that cannot be used, described in one line.

    The message names the file, the document, the object and the field, says what is wrong and
    what to do. The parts are kept as attributes so callers can act on them.
    """

    def __init__(self, message: str, *, source: str = "<api>", document: str | None = None,
                 kind: str | None = None, namespace: str | None = None, name: str | None = None,
                 field: str | None = None, line: int | None = None):
        super().__init__(message)
        self.source = source
        self.document = document
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.field = field
        self.line = line
