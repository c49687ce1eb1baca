"""One canonical reading of a request path, for every check that reasons about paths.

An upstream may decode a path more than once, split `;params` off a segment, treat `\\` as
`/`, or stop at a NUL; a check that reads the raw path differently from the upstream can
be walked around (`..;/`, `%252e%252e/`, `..%5c`, `..#`). `canonical_path` refuses every
such form and returns the path as the most generous upstream would read it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

# More layers of percent-encoding than this is no honest client's path.
MAX_DECODE_ROUNDS = 4


class PathError(ValueError):
    """A path no check can reason about; the message is a fixed phrase, safe to show."""


def canonical_path(raw: str) -> str:
    """The fully percent-decoded path of `raw` (no query), with `;params` stripped from
    each segment (and a decoded `?`/`#` read as the end of one, as an upstream that parses
    the decoded path again would). Raises PathError for a `#`, a backslash or a control
    byte in any encoding, or a `.`/`..` segment after decoding. Pure.
    """
    if "#" in raw:
        raise PathError("'#' is not allowed in a path")
    data = raw.encode("utf-8", "surrogateescape")
    for _ in range(MAX_DECODE_ROUNDS + 1):
        if b"\\" in data:
            raise PathError("backslashes are not allowed in a path")
        if any(b < 0x20 or b == 0x7F for b in data):
            raise PathError("control characters are not allowed in a path")
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        data = decoded
    else:
        raise PathError("too many layers of percent-encoding in a path")
    segments = [re.split(rb"[;?#]", seg, maxsplit=1)[0] for seg in data.split(b"/")]
    if any(seg.strip(b" \t") in (b".", b"..") for seg in segments):
        raise PathError("dot segments are not allowed in a path")
    return b"/".join(segments).decode("utf-8", "replace")
