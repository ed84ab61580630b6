"""The REST edge: the FastAPI app, its routes, request and response schemas, problem documents,
authentication, quotas, and the transport-independent request operations the gRPC server reuses."""
