"""Smoke test of an installed ferroloop wheel, run by scripts/build-wheels.

Not a pytest module (no test_ prefix): scripts/build-wheels runs it as
`python tests/wheel_smoke.py` with the venv the wheel was installed into,
with no Rust toolchain on PATH. It checks that ferroloop is imported from
site-packages (not this checkout), that asyncio runs on a ferroloop loop, and
a TCP echo over 127.0.0.1, a call_later and a subprocess. Prints one line and
exits 0 on success; any failure raises.
"""

import asyncio
import os
import sys
import sysconfig

import ferroloop

TIMEOUT = 30


async def main():
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith("ferroloop"), type(loop)

    # call_later
    fired = loop.create_future()
    t0 = loop.time()
    loop.call_later(0.05, fired.set_result, "later")
    assert await fired == "later"
    assert loop.time() - t0 >= 0.04, loop.time() - t0

    # TCP echo over 127.0.0.1
    async def echo(reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello ferroloop\n")
        await writer.drain()
        reply = await reader.readline()
        assert reply == b"HELLO FERROLOOP\n", reply
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    # subprocess
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print(42)", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, proc.returncode
    assert out.strip() == b"42", out
    return type(loop).__module__ + "." + type(loop).__qualname__


def run():
    where = os.path.dirname(ferroloop.__file__)
    site = sysconfig.get_paths()["purelib"]
    assert os.path.realpath(where).startswith(os.path.realpath(site)), (where, site)
    coro = asyncio.wait_for(main(), TIMEOUT)
    if sys.version_info >= (3, 12):
        loop_name = asyncio.run(coro, loop_factory=ferroloop.new_event_loop)
    else:
        loop_name = ferroloop.run(coro)
    print(
        "wheel smoke OK: CPython {}{}, {}, ferroloop from {}".format(
            sys.version.split()[0],
            "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else "",
            loop_name,
            where,
        )
    )


if __name__ == "__main__":
    run()
