"""aiofiles (file I/O in the loop's default executor) on ferroloop."""

from __future__ import annotations

import asyncio
import hashlib

import aiofiles
import aiofiles.os
from integ_support import assert_on_ferroloop, run


def content(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (2000 + 500 * i)


def test_concurrent_writes_and_reads(tmp_path):
    n = 12

    async def write(i: int) -> int:
        assert_on_ferroloop()
        data = content(i)
        async with aiofiles.open(tmp_path / f"f{i}.bin", "wb") as f:
            for start in range(0, len(data), 8192):  # many small writes
                await f.write(data[start : start + 8192])
        return len(data)

    async def read(i: int) -> bytes:
        assert_on_ferroloop()
        chunks = []
        async with aiofiles.open(tmp_path / f"f{i}.bin", "rb") as f:
            while chunk := await f.read(10_000):
                chunks.append(chunk)
        return b"".join(chunks)

    async def main():
        assert_on_ferroloop()
        sizes = await asyncio.gather(*(write(i) for i in range(n)))
        assert sizes == [len(content(i)) for i in range(n)]
        assert sorted(await aiofiles.os.listdir(tmp_path)) == sorted(f"f{i}.bin" for i in range(n))
        for i in range(n):
            assert (await aiofiles.os.stat(tmp_path / f"f{i}.bin")).st_size == sizes[i]
        datas = await asyncio.gather(*(read(i) for i in range(n)))
        assert datas == [content(i) for i in range(n)]

        # Text mode, appends from several tasks, line iteration.
        async def append(k: int) -> None:
            async with aiofiles.open(tmp_path / f"log{k}.txt", "a") as f:
                for j in range(100):
                    await f.write(f"{k} {j}\n")

        await asyncio.gather(*(append(k) for k in range(5)))
        for k in range(5):
            async with aiofiles.open(tmp_path / f"log{k}.txt") as f:
                lines = [line async for line in f]
            assert lines == [f"{k} {j}\n" for j in range(100)]
        await aiofiles.os.remove(tmp_path / "log0.txt")
        assert not await aiofiles.os.path.exists(tmp_path / "log0.txt")

    run(main())
    assert (tmp_path / "f3.bin").read_bytes() == content(3)
