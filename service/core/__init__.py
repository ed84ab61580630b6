"""What the gateway, the gRPC server and the workers share: settings, records, the Redis job store,
the artifact store, API keys, the queue (Celery app factory, task names, dispatch) and the janitor.

Nothing here imports the gateway, the workers or the engine."""
