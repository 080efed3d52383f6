"""What every command gets: the parsed arguments, the two consoles, stdin and the target."""

from __future__ import annotations

import argparse
import json
import os
from typing import TextIO

from rich.console import Console
from rich.text import Text

from lambdactl.target import Target, resolve_target


class Ctx:
    """Data goes to `out` (text, or JSON with `-o json`); messages and errors to `err`."""

    def __init__(self, args: argparse.Namespace, out: Console, err: Console, stdin: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.stdin = stdin
        self.json = args.output == "json"
        self._target: Target | None = None

    @property
    def target(self) -> Target:
        if self._target is None:
            args = self.args
            self._target = resolve_target(args.host, args.api_key_file, os.environ,
                                          context=args.context, tls_ca=args.tls_ca)
        return self._target

    def message(self, text: str) -> None:
        self.err.print(text, markup=False, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        """`error: ...` on stderr; the word is red on a terminal (unless NO_COLOR)."""
        first, *rest = message.splitlines() or [""]
        self.err.print(Text.assemble(("error:", "bold red"), f" {first}"), soft_wrap=True,
                       highlight=False)
        for line in rest:
            self.message(f"  {line}")

    def write_json(self, value: object) -> None:
        self.out.file.write(json.dumps(value, indent=2) + "\n")
        self.out.file.flush()

    def write_bytes(self, data: bytes) -> None:
        """Raw bytes on stdout; text streams without a buffer get UTF-8 text."""
        stream = self.out.file
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            stream.write(data.decode("utf-8", "replace") + "\n")
        else:
            stream.flush()
            buffer.write(data + b"\n")
            buffer.flush()
