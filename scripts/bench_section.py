"""Put a benchmark's markdown (stdin) in its section of docs/benchmarks.md, replacing the last run.

    python -m router.bench | python scripts/bench_section.py router.bench "Assignment cost (router)"

The section sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`; a new one is appended
under the given heading. The text is echoed, so the run still shows in the terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(name: str, heading: str) -> int:
    body = sys.stdin.read().strip()
    if not body:
        print(f"{name}: no output to record", file=sys.stderr)
        return 1
    print(body)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = f"{text.rstrip()}\n\n## {heading}\n\n{block}\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]))
