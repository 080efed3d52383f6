"""The benchmarks' plain-text tables and verdict lines, written once for every group
(stats.py's result tables, load.py's peer and outside.py's wrk groups)."""

from __future__ import annotations


def text_table(headers: list[str], rows: list[list[str]], *, left: set[int]) -> str:
    """Columns as wide as their widest cell; the `left` columns (text) align left, the
    others (numbers) right; a rule under the headers."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]),
                      *(line(row) for row in rows)])


def skipped(verdicts: list[str], group: str, why: object) -> None:
    """A group that could not run: said in the report's verdicts and on the console."""
    verdicts.append(f"{group}: skipped ({why})")
    print(f"  {group}: skipped ({why})", flush=True)
