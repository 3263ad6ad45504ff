"""What the image cache key costs now that it fingerprints each file's bytes (kit.data.images.fingerprint:
the whole file up to 128 KiB, else its first 128 KiB and last 64 KiB) against the name + size + time key
alone, measured in the same run on the same files (the page cache warm for both, as on a second command):
every fingerprint read, and remembered in the cache folder (FINGERPRINTS: read again only when a file's
inode, size or times changed), as image_cache does.

    .venv/bin/python scripts/bench_cache_key.py [FOLDER ...]

Default folders: the real photos in /work/shared/data (read only). Prints absolute times per 1,000 files,
the ratio, and the machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kit.data.images import cache_key

DEFAULT = [
    Path("/work/shared/data/cats-vs-dogs-dev/train"),
    Path("/work/shared/data/dog-breed-identification-sample/train"),
]


def stat_only_key(paths: list[Path]) -> str:
    """The key as it was: each file's name, size and modification time."""
    digest = hashlib.sha1()
    for path in paths:
        status = path.stat()
        digest.update(f"{path.name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def best_of(function, paths: list[Path], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(paths)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    folders = [Path(argument) for argument in sys.argv[1:]] or DEFAULT
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    )
    for folder in folders:
        paths = sorted(path for path in folder.iterdir() if path.is_file())
        size = sum(path.stat().st_size for path in paths) / len(paths) / 1000
        cache_key(paths, 256)  # warm the page cache for both
        old = best_of(stat_only_key, paths)
        new = best_of(lambda files: cache_key(files, 256), paths)
        memo = Path(tempfile.mkdtemp(prefix="bench-cache-key-"))
        cache_key(paths, 256, cache_dir=memo)  # the fingerprints memo written once
        remembered = best_of(lambda files, memo=memo: cache_key(files, 256, cache_dir=memo), paths)
        shutil.rmtree(memo)
        per_thousand = 1000 * 1000 / len(paths)  # ms per 1,000 files
        print(
            f"{folder}: {len(paths)} files of {size:.0f} KB on average; ms per 1,000 files: "
            f"name+size+time {old * per_thousand:.1f}; fingerprints read {new * per_thousand:.1f} "
            f"({new / old:.1f}x); fingerprints remembered {remembered * per_thousand:.1f} "
            f"({remembered / old:.1f}x)"
        )


if __name__ == "__main__":
    main()
