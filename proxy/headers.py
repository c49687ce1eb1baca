"""The header fields that belong to one connection, not to the message: one definition for
the gateway routes and the forward side, both directions.

RFC 9110 §7.6.1: Connection and the fields it names, Proxy-Connection, Keep-Alive, TE,
Transfer-Encoding, Upgrade; Trailer too (RFC 7230's list, which proxies still honour). The
whole Proxy-* family (Proxy-Authorization, Proxy-Authenticate, Proxy-Status ...) speaks to
this proxy, never past it. Host is the proxy's to set for the upstream, and means nothing in
a response.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)

Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def connection_named(headers: Headers) -> frozenset[str]:
    """The field names a Connection header lists (lower case)."""
    return frozenset(
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
        if token.strip()
    )


class HopByHop:
    """`lname in HopByHop(headers)`: the field stops at this proxy."""

    __slots__ = ("_named",)

    def __init__(self, headers: Headers) -> None:
        self._named = connection_named(headers)

    def __contains__(self, lname: str) -> bool:
        return lname in HOP_BY_HOP or lname in self._named or lname.startswith("proxy-")


def end_to_end(headers: Headers, *, also: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """`headers` without the hop-by-hop fields (and the lower-case names in `also`)."""
    stop = HopByHop(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lname = name.lower()
        if lname not in stop and lname not in also:
            out.add(name, value)
    return out
