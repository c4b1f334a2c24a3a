"""Top costs in py-spy's collapsed stacks (``bench_pipeline.py --profile DIR`` writes them).

Run: .venv/bin/python bench/profile_summary.py DIR [--top 25] [--depth module|function]

For each file (one per hub process) prints the share of CPU samples spent *in* each function
(self) and *under* it (inclusive), and a coarse breakdown by area (FHIR validation, pydantic,
crypto, SQL, Kafka client, HTTP server, faust, JSON, event loop). py-spy records only non-idle
samples, but a thread blocked in epoll, a lock or a PostgreSQL reply can still be sampled: those
samples are set apart (WAITING), so the shares are of the CPU the process used, threads included.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# First match wins: (area, substring of the file path or function).
AREAS: list[tuple[str, str]] = [
    ("fhir.resources validation", "fhir/resources"),
    ("fhir.resources validation", "fhir_core"),
    ("Qixin profile", "schemas/profile.py"),
    ("Qixin profile", "schemas/scoring.py"),
    ("Qixin profile", "schemas/codesystem.py"),
    ("routing rules (CEL)", "celpy"),
    ("routing rules (CEL)", "hub/adapters/rules.py"),
    ("routing rules (CEL)", "lark"),
    ("consent & minimisation", "hub/domain/consent.py"),
    ("consent & minimisation", "hub/domain/disclosure.py"),
    ("crypto", "cryptography"),
    ("crypto", "hub/adapters/crypto.py"),
    ("crypto", "hub/adapters/keystore.py"),
    ("SQL (SQLAlchemy + psycopg)", "sqlalchemy"),
    ("SQL (SQLAlchemy + psycopg)", "psycopg"),
    ("Kafka client", "aiokafka"),
    ("Kafka client", "kafka/"),
    ("faust / mode", "faust/"),
    ("faust / mode", "mode/"),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", "uvicorn"),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", "h11"),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", "starlette"),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", "fastapi"),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", "httptools"),
    ("pydantic (envelopes, settings)", "pydantic"),
    ("JSON", "json/"),
    ("JSON", "orjson"),
    ("asyncio event loop", "asyncio/"),
    ("asyncio event loop", "selectors.py"),
    ("threads (to_thread pool)", "concurrent/futures"),
    ("threads (to_thread pool)", "threading.py"),
]


# Leaf frames that are a thread waiting, not computing (py-spy cannot always tell from outside).
WAITING = (
    "EpollSelector.select (",
    "Condition.wait (",
    "Event.wait (",
    "Connection.wait (psycopg",
    "_worker (concurrent/futures/thread.py",
    "Thread.join (",
    "select (selectors.py",
)


def waiting(frames: list[str]) -> bool:
    return bool(frames) and frames[-1].startswith(WAITING)


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = [f for f in head.split(";") if not f.startswith(("process ", "thread "))]
        stacks.append((frames, int(count)))
    return stacks


def key(frame: str, depth: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file if depth == "module" else f"{m.group('func')} ({file})"


def area_of(frames: list[str]) -> str:
    # The innermost frame that belongs to a known area names the sample's area.
    for frame in reversed(frames):
        for area, needle in AREAS:
            if needle in frame:
                return area
    return "other"


def summarise(path: Path, top: int, depth: str, under: str = "", exclude: str = "") -> str:
    everything = [
        (f, c)
        for f, c in parse(path)
        if (not under or any(under in x for x in f)) and not (exclude and any(exclude in x for x in f))
    ]
    idle = sum(c for f, c in everything if waiting(f))
    stacks = [(f, c) for f, c in everything if not waiting(f)]
    total = sum(c for _, c in stacks)
    if not total:
        return f"{path.name}: no samples\n"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[key(frames[-1], depth)] += count
        for k in {key(f, depth) for f in frames}:
            inclusive[k] += count
        areas[area_of(frames)] += count
    out = [f"== {path.name}: {total} busy samples (+{idle} waiting: select, locks, PostgreSQL replies)"]
    out.append("  by area (innermost known frame):")
    out += [f"    {100 * c / total:5.1f}%  {a}" for a, c in areas.most_common()]
    out.append("  self:")
    out += [f"    {100 * c / total:5.1f}%  {k}" for k, c in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * c / total:5.1f}%  {k}" for k, c in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--depth", choices=("function", "module"), default="function")
    p.add_argument("--under", default="", help="only stacks with a frame containing this text")
    p.add_argument("--exclude", default="", help="leave out stacks with a frame containing this text")
    args = p.parse_args()
    files = sorted(args.dir.glob("*.txt")) if args.dir.is_dir() else [args.dir]
    for f in files:
        print(summarise(f, args.top, args.depth, args.under, args.exclude))
    return 0


if __name__ == "__main__":
    sys.exit(main())
