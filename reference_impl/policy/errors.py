"""The one error type the policy engine raises for malformed policy objects."""


class PolicyError(ValueError):
    """A policy object is malformed; the message names the object, the field and the fix."""


def where(obj: dict) -> str:
    """`Kind namespace/name`, for error messages about `obj`."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace', '?')}/{meta.get('name', '?')}"
