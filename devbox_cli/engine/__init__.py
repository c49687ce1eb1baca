"""Everything that talks to Docker: the raw Engine API wire code (wire.py) and the exec fast
path on it (fastexec.py), the docker-py backend (docker_backend.py), and the Docker objects
of a devbox: their labels and how they read back as views. Nothing here imports the
services or the CLI; this file imports nothing, so `devbox exec` stays cheap."""
