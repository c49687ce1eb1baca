"""Stub: filled in by its owner."""


class PoliciesAPI:
    pass
