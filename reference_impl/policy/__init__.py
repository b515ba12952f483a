"""The pure authorization/authentication engine: no sockets, no processes, Kubernetes-shaped dicts in.

Used by ztunnel (L4), the control plane (to translate what it ships to proxies) and the
waypoint (L7). See ISTIO-SEMANTICS.md sections 5, 6 and 8.
"""

from .authz import (  # noqa: F401
    DEFAULT_ROOT_NAMESPACE, AuthorizationPolicy, CompiledPolicy, Connection, Decision, L7Request,
    Translation, applies_to, evaluate_l4, evaluate_l7, parse_authorization_policy,
    select_policies, target_refs, translate_for_ztunnel, ztunnel_translation)
from .errors import PolicyError  # noqa: F401
from .jwt_authn import AuthnResult, JwtRule, authenticate, parse_jwt_rules  # noqa: F401
from .peerauth import (  # noqa: F401
    EffectiveMode, effective_mtls_mode, plaintext_allowed, translate_peer_authentication_for_ztunnel)
