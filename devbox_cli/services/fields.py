"""Field rules every resource shares: control characters and descriptions."""

from __future__ import annotations

import re

from devbox_cli.errors import UsageError

# Values travel in HTTP headers, query strings and one-line listings: a control character
# would split or corrupt them (tab is legal in a header).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_DESCRIPTION = 200


def validate_description(text: str | None) -> str | None:
    """One line of at most MAX_DESCRIPTION characters; empty or None means none."""
    if text is None or text == "":
        return None
    if not isinstance(text, str) or CONTROL.search(text) or len(text) > MAX_DESCRIPTION:
        raise UsageError(f"invalid --description: one line of at most {MAX_DESCRIPTION} characters")
    return text
