"""The one error type the policy engine raises for malformed policy objects."""

from __future__ import annotations

from typing import Any, Mapping

from ..api import ManifestError, security


class PolicyError(ManifestError):
    """A policy object is malformed; the message names the object, the field and the fix."""


def parsed(kind: str, obj: Mapping[str, Any]):
    """The api model of one security object (api.security.parse), failing with PolicyError."""
    try:
        return security.parse(kind, obj)
    except PolicyError:
        raise
    except ManifestError as exc:
        raise PolicyError(str(exc), kind=exc.kind, namespace=exc.namespace, name=exc.name,
                          field=exc.field) from None
