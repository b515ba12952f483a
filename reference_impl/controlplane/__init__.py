"""The istiod role: watches the cluster store, derives per-proxy config, streams it over
istiod.sock (reference_impl.xds), runs the mesh CA and provisions waypoints.

Pure parts (unit-testable without processes): `derive` (objects -> proxy config), `waypoints`,
`provision`, `policies`, `ca_policy`. The process: `istiod.Istiod`, started by `__main__`.
"""
