"""requirements.txt is a deployer's input: it is parsed here and pip never sees the file.

pip's own parser honours a PEP 263 coding line, splits lines on every Unicode line break,
expands `${VAR}`, joins `\\` continuations and obeys options (`-r /etc/passwd`,
`--no-binary`, `--find-links`): a file that one reader sees as harmless, pip may read as
an order to print a host file or build an sdist. So the file is read here, by one strict
set of rules, and pip gets only the normalized requirement strings as arguments:

- the bytes are UTF-8 without a BOM; no NUL or control character; lines end with `\\n`
  or `\\r\\n` and nothing else ends a line (U+2028, U+2029, NEL, VT, FF, FS/GS/RS, a lone
  CR are refused wherever they are, comments included);
- a coding declaration may only name UTF-8;
- `#` starts a comment (at the start of a line or after white space), as in pip;
- every other line is one requirement that `packaging` parses: a name, extras, version
  specifiers and markers. No options (nothing starts with `-`, no `--hash`), no URLs,
  no paths or file names pip would open, no `\\` continuations, no `${VAR}`, no `===`.

An error names the line and echoes at most that line.
"""

from __future__ import annotations

import re
import unicodedata

from packaging.requirements import InvalidRequirement, Requirement

from lambdad.errors import InvalidArgument, PayloadTooLarge

FILE = "requirements.txt"
MAX_REQUIREMENTS = 200
MAX_BYTES = 64 * 1024
MAX_LINE = 1000

# PEP 263, as pip (and Python) look for it in the first two lines.
_CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
_UTF8_NAMES = frozenset({"utf-8", "utf8", "u8", "utf"})
# pip strips comments with this pattern; so do we, so both agree on what a line holds.
_COMMENT = re.compile(r"(^|\s+)#.*$")
# Every character that str.splitlines() (and so pip) takes as a line break, but "\n".
_BREAKS = {
    "\r": "a carriage return not followed by a line feed",
    "\v": "a vertical tab (a line break to pip)",
    "\f": "a form feed (a line break to pip)",
    "\x1c": "a file separator U+001C (a line break to pip)",
    "\x1d": "a group separator U+001D (a line break to pip)",
    "\x1e": "a record separator U+001E (a line break to pip)",
    "\x85": "a next-line character U+0085 (a line break to pip)",
    "\u2028": "a line separator U+2028 (a line break to pip)",
    "\u2029": "a paragraph separator U+2029 (a line break to pip)",
}
# File names pip would open when given them as a requirement (pip's ARCHIVE_EXTENSIONS).
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz",
             ".txz", ".tlz", ".tar.lz", ".tar.lzma")
# What may stand before the markers: name, extras, specifiers. No '/', ':', '@', '\', '$'.
_HEAD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*+]*$")


def _refuse(number: int, line: str, why: str) -> InvalidArgument:
    shown = line.strip()
    shown = shown[:100] + "…" if len(shown) > 100 else shown
    return InvalidArgument(f"{FILE} line {number}: {shown!r}: {why}")


def _refuse_bare(number: int, why: str) -> InvalidArgument:
    """For lines whose text cannot be shown safely (undecodable, control characters)."""
    return InvalidArgument(f"{FILE} line {number}: {why}")


def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise PayloadTooLarge(f"{FILE} is larger than {MAX_BYTES // 1024} KiB")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _refuse_bare(1, "starts with a UTF-16 byte order mark; save the file as "
                              "UTF-8 without a BOM")
    if data.startswith(b"\xef\xbb\xbf"):
        raise _refuse_bare(1, "starts with a UTF-8 byte order mark (BOM); save the file "
                              "without it")
    if b"\x00" in data:
        number = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise _refuse_bare(number, "holds a NUL byte (UTF-16 text?); save the file as UTF-8")
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise _refuse_bare(number, f"is not UTF-8 (byte 0x{data[exc.start]:02x}); save the "
                                   "file as UTF-8") from None


def _lines(text: str) -> list[tuple[int, str]]:
    """(number, line) split on "\\n" alone, one "\\r" before it dropped; refuses every other
    line break and control character, wherever it stands."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        for char in line:
            if char in _BREAKS:
                raise _refuse_bare(number, f"holds {_BREAKS[char]}; lines must end with "
                                           "\\n or \\r\\n only")
            if char != "\t" and unicodedata.category(char) == "Cc":
                raise _refuse_bare(number, f"holds the control character U+{ord(char):04X}")
        found.append((number, line))
    return found


def _check_coding(number: int, line: str) -> None:
    match = _CODING.match(line)
    if match and match.group(1).lower().replace("_", "-") not in _UTF8_NAMES:
        raise _refuse(number, line, f"declares the encoding {match.group(1)!r}; only UTF-8 "
                                    "is accepted")


def parse_line(number: int, line: str) -> str | None:
    """The normalized requirement on this line, None for a blank or comment line."""
    if len(line) > MAX_LINE:
        raise _refuse_bare(number, f"is longer than {MAX_LINE} characters")
    if number <= 2:
        _check_coding(number, line)
    if "\\" in line:
        raise _refuse(number, line, "a backslash (line continuation) is not allowed")
    if "${" in line:
        raise _refuse(number, line, "environment variables (${...}) are not expanded")
    body = _COMMENT.sub("", line).strip()
    if not body:
        return None
    if body.startswith("-") or re.search(r"\s-", body):
        raise _refuse(number, line, "pip options (-r, -e, --index-url, --hash, ...) are not "
                                    "allowed; list one requirement per line")
    try:
        req = Requirement(body)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0][:200]
        raise _refuse(number, line, f"not a requirement ({reason}); a line holds a name, "
                                    "extras, versions and markers only") from None
    if req.url is not None:
        raise _refuse(number, line, "URLs (name @ url) are not allowed")
    if any(spec.operator == "===" for spec in req.specifier):
        raise _refuse(number, line, "arbitrary equality (===) is not allowed; use ==")
    if req.name.lower().endswith(_ARCHIVES):
        raise _refuse(number, line, "looks like a file name; paths and archives are not "
                                    "allowed, name a package")
    normalized = str(req)
    head = normalized.split(";", 1)[0]
    if head.lower().endswith(_ARCHIVES):  # a local version: pip opens `six==1.0+x.whl`
        raise _refuse(number, line, "looks like a file name; paths and archives are not "
                                    "allowed, name a package")
    if not _HEAD.match(head):
        raise _refuse(number, line, "not a plain requirement (name, extras, versions, markers)")
    return normalized


def plain_requirement(text: str) -> str | None:
    """`text` normalized if a requirements.txt line could hold it, else None.

    For requirement strings lambdad did not read from requirements.txt but from pip's own
    output, where a wheel's metadata (Requires-Dist) put them: `dep===/../../code/x` is a
    valid requirement to `packaging`, and pip, given it as an argument, takes it as a path
    (a `/` in it) and builds the folder it names, running its build backend."""
    try:
        return parse_line(3, text)  # line 3: no coding declaration to look for
    except InvalidArgument:
        return None


def parse_requirements(data: bytes) -> list[str]:
    """The requirements as normalized strings for pip's command line, or InvalidArgument
    naming the first bad line."""
    requirements: list[str] = []
    for number, line in _lines(_decode(data)):
        parsed = parse_line(number, line)
        if parsed is not None:
            requirements.append(parsed)
    if len(requirements) > MAX_REQUIREMENTS:
        raise InvalidArgument(f"{FILE} lists more than {MAX_REQUIREMENTS} packages")
    return requirements
