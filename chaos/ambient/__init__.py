"""The Chaos Toolkit provider of the ambient mesh chaos experiments (chaos/experiments/*.yaml).

Flat functions with JSON-friendly arguments, as chaostoolkit-kubernetes' are: `actions` (faults),
`probes` (what the steady-state hypotheses judge), `traffic` (the background traffic probe),
`control` (the cluster, the experiment's workloads and the report around one `chaos run`). Every
function reaches the mesh through a conformance Target built from the experiment's
`configuration` (`session`), never through an implementation's internals.
"""
