"""The gRPC side of fpf-client (``pip install fpf-client[grpc]``): stubs, codecs, the call mapping
and the transports, blocking and asyncio.

Nothing here is imported unless a client is asked for ``grpc://``, so the base install needs no grpcio.
"""
