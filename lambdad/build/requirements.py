"""requirements.txt is user input that the host's pip reads, so it is held to plain specifiers.

Options (`-r`, `--index-url`, `-e`), URLs, VCS links and local paths would let an
upload make the host read files or fetch from anywhere; they are refused.
"""

from __future__ import annotations

import re

from lambdad.errors import InvalidArgument

# name[extras] (version specifiers) (; markers)
_SPECIFIER = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*"
    r"(\[[A-Za-z0-9._,\s-]*\])?"
    r"\s*([<>=!~]=?\s*[A-Za-z0-9.*+!_-]+(\s*,\s*[<>=!~]=?\s*[A-Za-z0-9.*+!_-]+)*)?"
    r"\s*(;[^@]*)?$"
)
MAX_REQUIREMENTS = 200


def check_requirements(text: str) -> list[str]:
    """Returns the requirement lines, or raises InvalidArgument naming the bad line."""
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if "://" in line or line.startswith(("-", ".", "/")) or not _SPECIFIER.match(line):
            raise InvalidArgument(
                f"requirements.txt line {number}: {raw.strip()[:100]!r} is not a plain "
                "requirement (name, extras, versions, markers); options, URLs and paths "
                "are not allowed"
            )
        lines.append(line)
    if len(lines) > MAX_REQUIREMENTS:
        raise InvalidArgument(f"requirements.txt lists more than {MAX_REQUIREMENTS} packages")
    return lines
