"""The AuthorizationPolicy API other parts import: parse, scope, translate for ztunnel, evaluate.

- authz_model: typed policy objects, validation, `applies_to`, `target_refs`, `Decision`
- authz_l4: ztunnel's wire shape (`CompiledPolicy`), `translate_for_ztunnel`, `evaluate_l4`
- authz_l7: `L7Request`, `evaluate_l7` for the waypoint
"""

from .authz_l4 import (  # noqa: F401
    Clause, CompiledPolicy, CompiledRule, Connection, Match, Translation, evaluate_l4,
    select_policies, translate_for_ztunnel, ztunnel_translation)
from .authz_l7 import L7Request, evaluate_l7, policy_matches  # noqa: F401
from .authz_model import (  # noqa: F401
    DEFAULT_ROOT_NAMESPACE, L4_WHEN_KEYS, AuthorizationPolicy, Decision, applies_to,
    parse_authorization_policy, target_refs)
