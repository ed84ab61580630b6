"""The gRPC API (``proto/fpf/v1/fixedpoints.proto``), served beside the REST gateway; see docs/grpc.md."""
