"""The kubelet's part of the sidecar's lifecycle (the article's startup and shutdown races):

- start: an injected pod's app containers are held until its istio-proxy container is ready
  (Istio's holdApplicationUntilProxyStarts), so the app's first connection finds the proxy;
- delete: the app containers get SIGTERM first; the proxy gets it only once they have all
  stopped, and then drains (a grace period of 0 still kills everything at once);
- a proxy that dies is restarted like any container (RESTARTS counts it); the app keeps running.
"""

from __future__ import annotations

from .admission import is_injected_proxy


def proxy_of(rt):
    return next((c for c in rt.containers if is_injected_proxy(c.spec)), None)


def held(rt, container) -> bool:
    """An app container that has never started and waits for the pod's proxy to be ready."""
    proxy = proxy_of(rt)
    return proxy is not None and container is not proxy and container.started_at is None and not proxy.ready


def stops_last(rt, container) -> bool:
    """The proxy of a pod whose app containers still run: its SIGTERM waits for them."""
    return is_injected_proxy(container.spec) and any(
        c.running() for c in rt.containers if c is not container)


def proxy_to_stop(rt):
    """The proxy container to send SIGTERM now (its apps have stopped), or None."""
    proxy = proxy_of(rt)
    if proxy is None or not proxy.running() or rt.proxy_stopping:
        return None
    if any(c.running() for c in rt.containers if c is not proxy):
        return None
    rt.proxy_stopping = True
    return proxy
