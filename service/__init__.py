"""The fpf service, the torch-free side of it.

- :mod:`service.core`: what gateway, gRPC server and workers share (settings, records, the Redis
  job store, artifacts, API keys, the queue, the janitor);
- :mod:`service.gateway`: the REST edge (FastAPI);
- :mod:`service.grpc`: the gRPC edge over the same operations;
- :mod:`service.ops`: the ``fpf-server`` CLI, launcher and supervisor.

Imports run one way: gateway and grpc -> core, never into ``workers`` (import-linter checks it).
"""
