"""Fetch axe-core (the accessibility checker the browser tests run in each page) from the npm
registry, checked against its published integrity: `python scripts/fetch_axe.py`.

Writes `data/vendor/axe-core-VERSION/axe.min.js` once; a later run finds it and does nothing.
Only the standard library: it runs before anything else is installed, from setup.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "4.14.1"
TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{VERSION}.tgz"
# The registry's `dist.integrity` for that version.
INTEGRITY = (
    "sha512-"
    "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "data" / "vendor" / f"axe-core-{VERSION}" / "axe.min.js"


def main() -> int:
    if TARGET.is_file():
        print(f"axe-core {VERSION}: present ({TARGET.relative_to(ROOT)})")
        return 0
    print(f"axe-core {VERSION}: fetching {TARBALL}")
    with urllib.request.urlopen(TARBALL, timeout=120) as response:
        packed = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(packed).digest()).decode()
    if digest != INTEGRITY:
        print(
            f"axe-core {VERSION}: integrity {digest} is not the registry's {INTEGRITY}",
            file=sys.stderr,
        )
        return 1
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as archive:
        member = archive.extractfile("package/axe.min.js")
        if member is None:
            print("axe-core: the package has no axe.min.js", file=sys.stderr)
            return 1
        script = member.read()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".part")
    partial.write_bytes(script)
    partial.replace(TARGET)
    print(f"axe-core {VERSION}: {len(script):,} bytes in {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
