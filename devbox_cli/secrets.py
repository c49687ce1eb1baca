"""Stub: filled in by its owner."""


class SecretsAPI:
    pass
