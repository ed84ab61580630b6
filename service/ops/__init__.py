"""Running the service: the ``fpf-server`` CLI, the one-machine launcher and its supervisor, the
embedded Redis, and the API-key commands."""
