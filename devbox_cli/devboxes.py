"""Stub: filled in by its owner (DevboxesAPI)."""

from __future__ import annotations


class DevboxesAPI:
    def _devboxes_using(self, kind: str, name: str) -> list[str]:
        """Names of existing devboxes that use the secret/gateway/policy `name` (kind is
        "secret", "gateway" or "policy"). Deletes are refused while this is non-empty."""
        return []

    def _policy_changed(self, name: str) -> list[str]:
        """Push policy `name` to every running devbox that uses it; returns their names."""
        return []
