"""lambdad's CPU per captured log line, Docker's follow stream against the log channel.

Only lambdad's pure decoding is timed (process CPU), from bytes as they arrive to
`LogEntry`s: Docker's multiplexed frames with a timestamp per line (FrameDecoder,
parse_docker_line, parse_line) against the runtime's records of a pipe read's worth of
lines (RecordDecoder, parse_line). Not timed: the HTTP framing of Docker's response, the
socket reads, the store's JSON and disk writes (the same for both), and dockerd's own CPU
(which the channel removes). No target; docs/design-notes/log-channel.md has a figure.

    .venv/bin/python bench/log_decode.py [lines]
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "packaging" / "runtime" / "python")]

from lambda_runtime import logchannel  # noqa: E402

from lambdad.logs.channel import RecordDecoder  # noqa: E402
from lambdad.logs.docker_stream import FrameDecoder  # noqa: E402
from lambdad.logs.entry import LogEntry, parse_docker_line, parse_line  # noqa: E402

READ = 256 * 1024  # what one read of either stream takes at most in lambdad
LINE = b"0b5e8a1c-3f2d-4c1e-9a7b-123456789abc\t" + b"x" * 80  # a tagged 80-byte line
PER_PIPE_READ = 60  # lines in one of the supervisor's reads, as a flood fills them


def docker_path(lines: int) -> float:
    stamp = b"2026-11-28T01:00:00.123456789Z "
    frame = struct.pack(">BxxxL", 1, len(stamp) + len(LINE) + 1) + stamp + LINE + b"\n"
    blob = frame * lines
    entries = []
    started = time.process_time()
    decoder = FrameDecoder()
    for at in range(0, len(blob), READ):
        for stream, raw in decoder.feed(blob[at:at + READ]):
            when, text = parse_docker_line(raw)
            request_id, message, _ = parse_line(text)
            entries.append(LogEntry(when, "f", 1, "i", stream, request_id, message))
    assert len(entries) == lines
    return (time.process_time() - started) / lines


def channel_path(lines: int) -> float:
    queue = logchannel.Queue(text_cap=1 << 40)
    chunk = (LINE + b"\n") * PER_PIPE_READ
    for _ in range(lines // PER_PIPE_READ):
        queue.put(1, chunk, time.time_ns())
    blob = logchannel.RESPONSE_HEAD + queue.take_all()
    entries: list[LogEntry] = []
    started = time.process_time()
    decoder = RecordDecoder("f", 1, "i")
    for at in range(0, len(blob), READ):
        entries.extend(decoder.feed(blob[at:at + READ]))
    return (time.process_time() - started) / len(entries)


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    docker = docker_path(lines)
    channel = channel_path(lines)
    print(f"docker stream: {docker * 1e6:.2f} us/line   log channel: {channel * 1e6:.2f} us/line"
          f"   ratio {docker / channel:.1f}x")


if __name__ == "__main__":
    main()
