"""Options and helpers shared by every command group."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Output(str, Enum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="Output format: text or json.", show_default=True)
]
