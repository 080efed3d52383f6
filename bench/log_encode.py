"""lambdad's CPU to file one request's log lines from a log channel: LogEntry by LogEntry
(`RecordDecoder.take`, `LogStore.append`, `LogEntry.to_json`) against the encoded path
(`RecordDecoder.take_encoded`, `LogStore.append_encoded`: no object a line unless someone
follows the function), over the records a warm `functions/greet` request makes (START and
the handler's print, then END and REPORT: four lines, two records), 20 requests a read as
the channel's 20 ms batches bring them at one connection. Process CPU, rounds alternating.
No target.

    .venv/bin/python bench/log_encode.py [rounds]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lambdad.logs.channel import HEADER, LINES, RecordDecoder  # noqa: E402
from lambdad.logs.store import LogStore  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.lambda.log-records\r\n\r\n"
RID = "0f8e8c1a-4b7e-4d7a-9c1e-2a3b4c5d6e7f"
PER_READ = 20
READS = 300


def record(lines: list[str], time_ns: int) -> bytes:
    payload = "".join(line + "\n" for line in lines).encode()
    return HEADER.pack(len(payload), LINES, 1, 0, time_ns) + payload


def batch() -> bytes:
    now = time.time_ns()
    records = []
    for n in range(PER_READ):
        records.append(record([f"START RequestId: {RID} Version: 3",
                               f"{RID}\tHello, World"], now + n * 1000))
        records.append(record([f"END RequestId: {RID}",
                               f"REPORT RequestId: {RID}\tDuration: 0.41 ms\tBilled Duration: "
                               "1 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB"],
                              now + n * 1000 + 500))
    return b"".join(records)


def run(encoded: bool, data: bytes, root: Path) -> float:
    """CPU us per request."""
    store = LogStore(root, max_pending_bytes=1 << 40)
    started = time.process_time()
    for _ in range(READS):
        decoder = RecordDecoder("bench-warm", 1, "abcdef012345")
        decoder.push(HEAD + data)
        while decoder.pending:
            if encoded:
                lines, sizes = decoder.take_encoded(64)
                store.append_encoded("bench-warm", lines, sizes)
            else:
                for entry in decoder.take(64):
                    store.append(entry)
    return (time.process_time() - started) / (READS * PER_READ) * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    data = batch()
    results: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(rounds):
            for encoded in (False, True):
                results[encoded].append(run(encoded, data, Path(root)))
    for encoded, values in results.items():
        name = "encoded (take_encoded)" if encoded else "entry by entry (take)"
        values.sort()
        print(f"{name:24} median {values[len(values) // 2]:5.1f} us per request of four lines "
              f"({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
