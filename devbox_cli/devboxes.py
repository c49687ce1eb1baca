"""Stub: filled in by its owner."""


class DevboxesAPI:
    pass
