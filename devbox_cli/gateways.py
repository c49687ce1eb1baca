"""Stub: filled in by its owner."""


class GatewaysAPI:
    pass
