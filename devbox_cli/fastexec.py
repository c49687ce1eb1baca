"""Stub."""


def main(args: list[str]) -> int:
    return 0
