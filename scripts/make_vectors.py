"""Write (or, with --check, verify) the shared protocol v2 vectors, tests/vectors/protocol_v2.json.

The content comes from ``channel.vectors.build_vectors`` and is deterministic: run this after
changing the protocol's messages and commit the file; the JS interop tests and the web SDK
read the same file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from channel.vectors import build_vectors, render

TARGET = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "protocol_v2.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is not current")
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()
    text = render(build_vectors())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is not current: run scripts/make_vectors.py", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(build_vectors()['cases'])} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
