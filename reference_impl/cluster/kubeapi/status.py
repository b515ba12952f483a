"""Kubernetes `Status` answers (metav1.Status), shaped so kubectl prints its usual messages:
`Error from server (NotFound): pods "x" not found`, `The Deployment "x" is invalid: spec.replicas:
Invalid value: ...`."""
from __future__ import annotations

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
            413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
            500: "InternalError"}


class ApiError(Exception):
    """An error answer; `status` is the Status object sent with `code`."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.status = status(code, message, reason, details)


def status(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason or _REASONS.get(code, "Unknown"), "code": code}
    if details is not None:
        out["details"] = details
    return out


def success(details: dict | None = None) -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        out["details"] = details
    return out


def not_found(group_resource: str, name: str, kind: str) -> ApiError:
    return ApiError(404, f'{group_resource} "{name}" not found',
                    details={"name": name, "group": group_resource.partition(".")[2],
                             "kind": group_resource.partition(".")[0]})


def already_exists(group_resource: str, name: str) -> ApiError:
    return ApiError(409, f'{group_resource} "{name}" already exists', "AlreadyExists",
                    {"name": name, "group": group_resource.partition(".")[2],
                     "kind": group_resource.partition(".")[0]})


def conflict(group_resource: str, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {group_resource} "{name}": the object '
                         "has been modified; please apply your changes to the latest version and "
                         "try again", "Conflict",
                    {"name": name, "group": group_resource.partition(".")[2],
                     "kind": group_resource.partition(".")[0]})


def invalid(kind: str, group: str, name: str, causes: list[dict]) -> ApiError:
    """422: each cause names its field (`field`) and says what is wrong (`message`)."""
    qualified = f"{kind}.{group}" if group else kind
    text = "; ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"]
                     for c in causes)
    return ApiError(422, f'{qualified} "{name}" is invalid: {text}', "Invalid",
                    {"name": name, "group": group, "kind": kind, "causes": causes})


def gone(message: str) -> ApiError:
    return ApiError(410, message, "Expired")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")
