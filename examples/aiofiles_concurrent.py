"""Reading and writing files concurrently with aiofiles (file I/O runs in
a thread pool, so the event loop is not blocked), in a temporary directory."""

# requires: aiofiles

from __future__ import annotations

import asyncio
import os
import tempfile

import aiofiles
import aiofiles.os
from _runner import print_loop, run


async def write_file(path: str, n: int) -> None:
    async with aiofiles.open(path, "w") as f:
        for i in range(n):
            await f.write(f"{os.path.basename(path)} line {i}\n")


async def append_line(path: str, text: str) -> None:
    async with aiofiles.open(path, "a") as f:
        await f.write(text + "\n")


async def read_file(path: str) -> tuple[str, int, str]:
    async with aiofiles.open(path) as f:
        lines = [line async for line in f]  # aiofiles files are async iterators
    return os.path.basename(path), len(lines), lines[-1].rstrip("\n")


async def main() -> None:
    print_loop()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"file-{i}.txt") for i in range(5)]

        await asyncio.gather(*(write_file(p, 10 * (i + 1)) for i, p in enumerate(paths)))
        await asyncio.gather(*(append_line(p, "appended") for p in paths))
        for name, count, last in sorted(await asyncio.gather(*(read_file(p) for p in paths))):
            print(f"{name}: {count} lines, last: {last!r}")

        # aiofiles.os wraps os functions the same way.
        sizes = await asyncio.gather(*(aiofiles.os.stat(p) for p in paths))
        print("sizes:", [s.st_size for s in sizes])
        await aiofiles.os.remove(paths[0])
        print("files left:", sorted(os.listdir(tmp)))

        # Binary mode, and reading in chunks.
        blob = os.path.join(tmp, "blob.bin")
        async with aiofiles.open(blob, "wb") as f:
            await f.write(bytes(range(256)) * 100)
        chunks = []
        async with aiofiles.open(blob, "rb") as f:
            while chunk := await f.read(4096):
                chunks.append(len(chunk))
        print("chunks read:", chunks)


if __name__ == "__main__":
    run(main)
