"""Running programs with asyncio.create_subprocess_exec: reading their
output line by line, communicate(), exit codes, several at once."""

from __future__ import annotations

import asyncio
import sys

from _runner import print_loop, run

COUNT = "import sys\nfor i in range(int(sys.argv[1])): print('line', i)"
UPPER = "import sys; sys.stdout.write(sys.stdin.read().upper())"
FAIL = "import sys; sys.stderr.write('something went wrong\\n'); sys.exit(3)"


async def main() -> None:
    print_loop()

    # Read stdout line by line while the child runs.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", COUNT, "3", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async for line in proc.stdout:
        print("child said:", line.decode().rstrip())
    print("exit code:", await proc.wait())

    # communicate(): write stdin, read all of stdout, wait for the exit.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UPPER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(b"shout this\n")
    print("communicate:", out.decode().rstrip(), "/ exit code:", proc.returncode)

    # A failing child: its stderr and exit code.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAIL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    print("stderr:", err.decode().rstrip(), "/ exit code:", proc.returncode)

    # Several children at once.
    async def count_lines(n: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", COUNT, str(n), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return len(out.splitlines())

    print("line counts:", await asyncio.gather(*(count_lines(n) for n in (5, 50, 500))))


if __name__ == "__main__":
    run(main)
