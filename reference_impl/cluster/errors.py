"""The one error type a user of the local cluster sees."""


class ClusterError(Exception):
    """A problem with the local cluster, stated in one sentence that says what to do."""
