"""Field-level checks shared by every kind's validator.

A `Checker` is bound to one document. Each check either returns the value or raises a
ManifestError naming the file, the document, the object, the field path and what to do.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import NoReturn

from .errors import ManifestError, format_path

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

_TYPE_WORDS = {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
               bool: "true or false"}
_TYPE_HINTS = {
    dict: "write it as a mapping of `key: value` lines",
    list: "write it as a YAML list (one `- ` item per line)",
    str: "quote the value",
    int: "write a whole number without quotes",
    bool: "write true or false without quotes",
}


def describe(value) -> str:
    """A short human description of a YAML value, for 'got ...' in messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the string "{shown}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def is_type(value, typ) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def line_of(node, path) -> int | None:
    """1-based line of the deepest YAML node along `path` (None without a node)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(part, int):
            values = node.value if node.id == "sequence" else None
            if values is not None and 0 <= part < len(values):
                child = values[part]
        elif node.id == "mapping":
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == str(part):
                    child = value_node
                    break
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


class Checker:
    """Checks for one document; `fail` builds the one-line error."""

    def __init__(self, source: str | None, document: str | None, node=None):
        self.source = source
        self.document = document
        self.node = node
        self.kind: str | None = None
        self.namespace: str | None = None
        self.name: str | None = None

    # -- errors -------------------------------------------------------------------------------
    def fail(self, path, problem: str, hint: str | None = None) -> NoReturn:
        path = tuple(path)
        line = line_of(self.node, path)
        desc = []
        if self.kind:
            obj = self.name or "(unnamed)"
            if self.namespace and self.name:
                obj = f"{self.namespace}/{self.name}"
            desc.append(f"{self.kind} {obj}")
        if line is not None:
            desc.append(f"line {line}")
        if self.source is None:
            # An object already in the store (no file): name the object alone.
            where = ", ".join(desc) or "object"
        else:
            where = f"{self.source}: {self.document}"
            if desc:
                where += f" ({', '.join(desc)})"
        field = format_path(path)
        message = f"{where}: {field + ': ' if field else ''}{problem}"
        if hint:
            message += f"; {hint}"
        raise ManifestError(message, source=self.source, document=self.document, kind=self.kind,
                            namespace=self.namespace, name=self.name, field=field or None,
                            line=line)

    # -- typed access ---------------------------------------------------------------------------
    def get(self, mapping: dict, key: str, path, typ, *, required: bool = False,
            hint: str | None = None):
        """mapping[key] checked against `typ`; None when absent (or null) and not required."""
        field = (*path, key)
        value = mapping.get(key)
        if value is None:
            if required:
                self.fail(field, "required field is missing", hint or f"add {key}")
            return None
        if not is_type(value, typ):
            self.fail(field, f"expected {_TYPE_WORDS[typ]}, got {describe(value)}",
                      hint or _TYPE_HINTS[typ])
        return value

    def items(self, mapping: dict, key: str, path, *, required: bool = False,
              hint: str | None = None, non_empty: bool = False) -> list[tuple[tuple, dict]]:
        """A list of mappings as [(item path, item)], checking each item is a mapping."""
        values = self.get(mapping, key, path, list, required=required, hint=hint)
        if values is None:
            return []
        if non_empty and not values:
            self.fail((*path, key), "must not be empty", hint)
        out = []
        for i, item in enumerate(values):
            if not isinstance(item, dict):
                self.fail((*path, key, i), f"expected a mapping, got {describe(item)}",
                          _TYPE_HINTS[dict])
            out.append(((*path, key, i), item))
        return out

    def strings(self, mapping: dict, key: str, path, *, hint: str | None = None,
                non_empty_values: bool = False) -> list[str]:
        """A list of strings (empty list when absent)."""
        values = self.get(mapping, key, path, list, hint=hint)
        if values is None:
            return []
        for i, item in enumerate(values):
            if not isinstance(item, str):
                self.fail((*path, key, i), f"expected a string, got {describe(item)}",
                          hint or "quote the value")
            if non_empty_values and item == "":
                self.fail((*path, key, i), "empty value is not allowed",
                          "remove the empty entry or give it a value")
        return values

    def string_map(self, mapping: dict, key: str, path, *, hint: str | None = None) -> dict:
        """A mapping of string to string (empty dict when absent)."""
        values = self.get(mapping, key, path, dict, hint=hint)
        if values is None:
            return {}
        for k, v in values.items():
            if not isinstance(k, str):
                self.fail((*path, key), f"key {k!r} is not a string", "quote the key")
            if not isinstance(v, str):
                self.fail((*path, key, k), f"expected a string, got {describe(v)}",
                          hint or f'quote the value: {k}: "{v}"')
        return values

    def enum(self, mapping: dict, key: str, path, allowed, *, default=None, required=False):
        value = self.get(mapping, key, path, str, required=required,
                         hint=f"use one of {', '.join(allowed)}")
        if value is None:
            return default
        if value not in allowed:
            self.fail((*path, key), f"unknown value {value!r}", f"use one of {', '.join(allowed)}")
        return value

    def port(self, mapping: dict, key: str, path, *, required: bool = False):
        value = self.get(mapping, key, path, int, required=required,
                         hint="give a port number from 1 to 65535")
        if value is not None and not 1 <= value <= 65535:
            self.fail((*path, key), f"port {value} is out of range",
                      "use a port number from 1 to 65535")
        return value

    def known(self, mapping: dict, path, fields) -> None:
        """Refuse fields the schema does not have, as kubectl's strict validation does:
        a misspelt field would otherwise be ignored silently."""
        for key in mapping:
            if key in fields:
                continue
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known fields: {', '.join(fields)}"
            self.fail((*path, key), "unknown field", hint)

    # -- names ----------------------------------------------------------------------------------
    def dns_label(self, value: str, field) -> None:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            self.fail(field, f"{value!r} is not a valid DNS-1123 label",
                      "use at most 63 lowercase letters, digits and '-', starting and ending "
                      "with a letter or digit")

    def dns_1035_label(self, value: str, field) -> None:
        if len(value) > 63 or not _DNS_1035_LABEL.match(value):
            self.fail(field, f"{value!r} is not a valid DNS-1035 label",
                      "use at most 63 lowercase letters, digits and '-', starting with a letter "
                      "and ending with a letter or digit")

    def dns_subdomain(self, value: str, field) -> None:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            self.fail(field, f"{value!r} is not a valid DNS-1123 subdomain",
                      "use lowercase letters, digits, '-' and '.', starting and ending with a "
                      "letter or digit")

    def port_name(self, value: str, field) -> None:
        """IANA service name: what container port names and named targetPorts must be."""
        if (len(value) > 15 or not _IANA_SVC_NAME.match(value) or "--" in value
                or not any(c.isalpha() for c in value)):
            self.fail(field, f"{value!r} is not a valid port name",
                      "use at most 15 lowercase letters, digits and '-', with at least one "
                      "letter (e.g. http)")

    def label_key(self, key: str, field) -> None:
        prefix, _, name = key.rpartition("/")
        if prefix:
            if len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
                self.fail(field, f"key {key!r} has an invalid prefix {prefix!r}",
                          "a prefix is a DNS subdomain such as istio.io")
        if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            self.fail(field, f"key {key!r} is not a valid label or annotation key",
                      "use at most 63 letters, digits, '-', '_' and '.', starting and ending "
                      "with a letter or digit, with an optional 'prefix/'")

    def label_value(self, value: str, field) -> None:
        if value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
            self.fail(field, f"{value!r} is not a valid label value",
                      "use at most 63 letters, digits, '-', '_' and '.', starting and ending "
                      "with a letter or digit")

    # -- addresses ------------------------------------------------------------------------------
    def ip_or_cidr(self, value: str, field) -> None:
        try:
            if "/" in value:
                ipaddress.ip_network(value, strict=False)
            else:
                ipaddress.ip_address(value)
        except ValueError:
            self.fail(field, f"{value!r} is not a valid IP address or CIDR range",
                      "write an address such as 10.1.2.3 or a range such as 10.1.0.0/16")

    def port_string(self, value: str, field) -> None:
        """Istio's string ports (operation.ports, destination.port): 0 to 65535, as
        is:pkg/config/security ValidatePorts accepts."""
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= 65535:
            self.fail(field, f"{value!r} is not a port number",
                      'write a port from 0 to 65535 as a quoted string, e.g. "8000"')
