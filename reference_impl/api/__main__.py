"""Check manifests without a cluster: `python -m reference_impl.api FILE_OR_DIR...`.

Prints one line per object (and its legacy-form warnings); on the first problem prints the
ManifestError sentence and exits 1.
"""

import sys

from . import ManifestError, legacy_warnings, load_files, object_key


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m reference_impl.api FILE_OR_DIR...", file=sys.stderr)
        return 2
    try:
        objects = load_files(argv)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for obj in objects:
        kind, namespace, name = object_key(obj)
        print(f"ok  {kind} {namespace + '/' if namespace else ''}{name}")
        for warning in legacy_warnings(obj):
            print(f"    warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
