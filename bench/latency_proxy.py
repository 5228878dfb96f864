"""A TCP proxy that adds a fixed delay to every answer: PostgreSQL "across a network" on one machine.

Bytes from the client go to the server at once; bytes from the server reach the client DELAY ms after they
arrived, in order. Every request-response exchange with the server (a statement, a commit) therefore takes
DELAY ms longer, as a network round trip of DELAY ms would make it. Chosen over `tc netem` on a veth pair:
netem needs CAP_NET_ADMIN and a network namespace the server would have to live in, which this machine's
containers do not give; the proxy adds the same wait to each exchange and runs anywhere.

    .venv/bin/python bench/latency_proxy.py --port 15432 --upstream 127.0.0.1:5432 --delay-ms 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy READER to WRITER, each chunk held until DELAY seconds after it arrived (order kept)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        while chunk := await reader.read(65536):
            await queue.put((time.monotonic() + delay, chunk))
    except (ConnectionError, OSError):
        pass
    await queue.put((0.0, b""))
    with contextlib.suppress(ConnectionError, OSError):
        await sender
    writer.close()


async def _serve(port: int, upstream: tuple[str, int], delay: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer, 0.0), _pipe(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="where to listen (127.0.0.1)")
    parser.add_argument("--upstream", default="127.0.0.1:5432", help="the server, HOST:PORT (default PostgreSQL's)")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to every answer, in milliseconds")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    asyncio.run(_serve(args.port, (host, int(port)), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
