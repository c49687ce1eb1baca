"""The credential swap, one implementation for gateway routes (proxy/gateway.py) and
intercepted hosts (proxy/intercepted.py): where a devbox may present its gateway token, how
the upstream request's headers, query and path are built from the client's (every token of
the devbox out, the real credential in), and the redactor for what comes back.

A token is presented as the credentials of any `Authorization` scheme (`Bearer T`, `token
T`), inside `Authorization: Basic` as the user or the password of the pair (`x:T`,
`T:x-oauth-basic`, as git and gh send it), in `x-api-key`, or in the header the gateway's
auth names; it is compared in constant time. The devbox's tokens never go upstream: a
header or query parameter holding one (also base64'd inside Basic) is dropped, and a path
holding one is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterator, Sequence
from urllib.parse import quote, unquote_plus

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import GatewayBinding
from proxy.errors import ProxyError
from proxy.gateway_response import DECODABLE, coding
from proxy.headers import HopByHop
from proxy.paths import PathError, canonical_path
from proxy.redact import Redactor

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# Never sent upstream: a Range lets a client fetch a reflected secret in slices that each
# miss the redactor; an Expect is answered by the proxy (proxy/upstream.py).
REQUEST_DROP = frozenset({"range", "if-range", "expect"})
# where a devbox may present its gateway token (besides the auth mechanism's own header)
TOKEN_HEADERS = ("authorization", "x-api-key")


def _token_header_names(binding: GatewayBinding) -> tuple[str, ...]:
    if binding.auth.type == "header" and binding.auth.key:
        return (*TOKEN_HEADERS, binding.auth.key.lower())
    return TOKEN_HEADERS


def _basic_pair(value: str) -> tuple[str, str] | None:
    """The (user, password) of a Basic credentials value, or None when it is not one."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.decode("utf-8", "replace").partition(":")
    return (user, password) if sep else None


def _candidates(name: str, value: str) -> Iterator[str]:
    """The values in header `name` that could be a token."""
    if name != "authorization":
        yield value.strip()
        return
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "basic":
        yield from _basic_pair(rest) or ()
    elif rest.strip():
        yield rest.strip()


def presented(headers: Headers, binding: GatewayBinding) -> bool:
    """Whether the request carries `binding`'s token where a token may be presented."""
    token = binding.token.encode()
    ok = False
    for name in _token_header_names(binding):
        for value in headers.getall(name, ()):
            for candidate in _candidates(name, value):
                # no early exit: every presented value costs the same compare
                ok |= hmac.compare_digest(candidate.encode(errors="replace"), token)
    return ok


def _holds_token(name: str, value: str, tokens: Sequence[str]) -> bool:
    for token in tokens:  # a loop, not any(): this runs for every header of every request
        if token in value:
            return True
    if name == "authorization" and value[:6].lower() == "basic ":
        pair = _basic_pair(value[6:])
        return pair is not None and any(t in part for t in tokens for part in pair)
    return False


def credential_headers(binding: GatewayBinding) -> dict[str, str]:
    """The headers that carry the credential (and the gateway's custom headers)."""
    auth = binding.auth
    headers = {h.name: h.value for h in binding.headers}
    if auth.type == "bearer":
        headers["Authorization"] = f"Bearer {binding.credential}"
    elif auth.type == "basic":
        userpass = f"{auth.key}:{binding.credential}" if auth.key else binding.credential
        headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
    elif auth.type == "header":
        assert auth.key is not None
        headers[auth.key] = binding.credential
    return headers


def upstream_headers(
    headers: Headers, binding: GatewayBinding, tokens: Sequence[str], *, credential: bool
) -> CIMultiDict[str]:
    """The client's headers as they go upstream: hop-by-hop fields, Range and every header
    holding a token of the devbox dropped; Accept-Encoding limited to what the redactor can
    read. With `credential`, the places a token may be presented are the proxy's: emptied,
    then the credential and the gateway's custom headers set. Without it (an intercepted
    request that carried no token), nothing is added."""
    hop = HopByHop(headers)
    drop = set(REQUEST_DROP)
    if credential:
        drop.update(_token_header_names(binding))
    out: CIMultiDict[str] = CIMultiDict()
    accepted: list[str] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in hop or lname in drop or _holds_token(lname, value, tokens):
            continue
        if lname == "accept-encoding":
            # only encodings the proxy can decode, so a reflected secret can be redacted
            accepted += [e for e in value.split(",") if coding(e) in DECODABLE]
            continue
        out.add(name, value)
    # Always said: with no Accept-Encoding an upstream may pick any coding (br, zstd).
    out["Accept-Encoding"] = ",".join(accepted) if accepted else "identity"
    if credential:
        for name, value in credential_headers(binding).items():
            out[name] = value
    return out


def upstream_query(
    query: str, binding: GatewayBinding, tokens: Sequence[str], *, credential: bool
) -> str:
    """The raw query as it goes upstream: parameters holding a token dropped; with
    `credential` and query auth, the client's own parameter of that name replaced by the
    credential."""
    parts = []
    key = binding.auth.key if credential and binding.auth.type == "query" else None
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        name_text, value_text = unquote_plus(name), unquote_plus(value)
        if any(t in value_text or t in name_text for t in tokens):
            continue  # a token never goes upstream, wherever it was put
        if key is not None and name_text == key:
            continue  # the client does not choose the credential
        parts.append(part)
    if key is not None:
        parts.append(f"{quote(key, safe='')}={quote(binding.credential, safe='')}")
    return "&".join(parts)


def checked_path(raw: str, tokens: Sequence[str]) -> str:
    """The canonical path (proxy/paths.py) of a raw request path; ProxyError 400 for one no
    check can reason about, or one that holds a token of the devbox."""
    try:
        path = canonical_path(raw)
    except PathError as exc:
        raise ProxyError(400, str(exc)) from None
    if any(t in path for t in tokens):
        raise ProxyError(400, "a gateway token in the path is never sent upstream")
    return path


def redactor_for(binding: GatewayBinding) -> Redactor:
    secrets = list(binding.secret_values())
    if binding.auth.type == "basic":
        userpass = (
            f"{binding.auth.key}:{binding.credential}" if binding.auth.key else binding.credential
        )
        secrets.append(base64.b64encode(userpass.encode()).decode())
    return Redactor(secrets)
