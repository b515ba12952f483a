"""Pod volumes for the kubelet: `configMap` (each key a file, as the kubelet's atomic writer
leaves them) and `emptyDir`, made under `<run dir>/volumes/<pod uid>/<volume>/`, and mounted at
each container's `mountPath` in a private mount namespace of its own.

Pods share the machine's filesystem, so a mount must not be seen outside its container: the
container's process unshares its mount namespace (slave propagation: the host's mounts still
reach it, its own never leave) and bind-mounts each volume before `ip netns exec` runs, so the
files are in place before the container's program starts. An empty directory is made at a
mountPath the host lacks (the mount point itself; it stays empty outside the pod). `exec` into
such a container enters its mount namespace too (`exec_prefix`).
"""
from __future__ import annotations

import base64
import ctypes
import os
import shutil
from dataclasses import dataclass

from . import naming

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 1, 32, 4096, 16384, 1 << 19
SUPPORTED = ("configMap", "emptyDir")


class VolumeError(Exception):
    """A volume this cluster cannot give (the container reports it and does not start)."""


class VolumeNotReady(Exception):
    """A volume whose source does not exist yet (the container waits, as the kubelet does)."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def pod_dir(cluster: str, uid: str) -> str:
    return os.path.join(naming.run_dir(cluster), "volumes", uid)


def mounts_for(cluster: str, store, pod: dict, container: dict) -> list[Mount]:
    """The container's mounts, each volume made (once per pod) under the pod's directory."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    out = []
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name")
        volume = volumes.get(name)
        if volume is None:
            raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise VolumeError(f"volumeMount {name!r}: subPath is not supported by the reference "
                              "cluster; mount the whole volume")
        source = os.path.join(pod_dir(cluster, meta["uid"]), name)
        if not os.path.isdir(source):
            _make(source, volume, meta["namespace"], store)
        read_only = bool(mount.get("readOnly")) or "configMap" in volume
        out.append(Mount(source, mount["mountPath"], read_only))
    return out


def _make(source: str, volume: dict, namespace: str, store) -> None:
    name = volume.get("name")
    if "emptyDir" in volume:
        os.makedirs(source, exist_ok=True)
        os.chmod(source, 0o777)
        return
    if "configMap" not in volume:
        kinds = [k for k in volume if k != "name"]
        raise VolumeError(f"volume {name!r} is of type {', '.join(kinds) or 'none'}; the "
                          f"reference cluster mounts only {' and '.join(SUPPORTED)} volumes")
    ref = volume["configMap"]
    config_map = store.get("ConfigMap", namespace, ref.get("name"))
    if config_map is None and not ref.get("optional"):
        raise VolumeNotReady(f'configmap "{ref.get("name")}" not found')
    data = dict((config_map or {}).get("data") or {})
    binary = {k: base64.b64decode(v) for k, v in ((config_map or {}).get("binaryData") or {}).items()}
    items = ref.get("items")
    files = {i["path"]: i["key"] for i in items} if items else {k: k for k in [*data, *binary]}
    mode = ref.get("defaultMode", 0o644)
    partial = source + ".new"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for path, key in files.items():
        if key not in data and key not in binary:
            if ref.get("optional"):
                continue
            raise VolumeNotReady(f'configmap "{ref.get("name")}" has no key "{key}"')
        target = os.path.join(partial, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(binary[key] if key in binary else data[key].encode())
        os.chmod(target, mode)
    os.chmod(partial, 0o755)
    os.replace(partial, source)


def prepare_targets(mounts: list[Mount]) -> None:
    for m in mounts:
        os.makedirs(m.target, exist_ok=True)


def enter(mounts: list[Mount]):
    """A preexec_fn: a private mount namespace with `mounts` bound (raises OSError)."""
    def run() -> None:
        if _libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        _mount(None, "/", MS_REC | MS_SLAVE)
        for m in mounts:
            _mount(m.source, m.target, MS_BIND)
            if m.read_only:
                _mount(None, m.target, MS_BIND | MS_REMOUNT | MS_RDONLY)
    return run


def _mount(source: str | None, target: str, flags: int) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source or ''} on {target}: {os.strerror(errno)}")


def exec_prefix(pod: dict, container: str | None, netns: str) -> list[str]:
    """How to run a command in `container` of `pod`: in its network namespace, and in its own
    mount namespace when it mounts volumes (then the volumes are where the pod sees them)."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    chosen = next((c for c in containers if c.get("name") == container), None) if container \
        else (containers[0] if containers else None)
    if chosen and chosen.get("volumeMounts"):
        pid = next((s.get("pid") for s in (pod.get("status") or {}).get("containerStatuses") or []
                    if s.get("name") == chosen.get("name")), None)
        if pid:
            return ["nsenter", f"--target={pid}", "--mount", "--net", "--"]
    return ["ip", "netns", "exec", netns]


def remove(cluster: str, uid: str) -> None:
    shutil.rmtree(pod_dir(cluster, uid), ignore_errors=True)
