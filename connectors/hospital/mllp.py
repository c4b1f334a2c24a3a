"""A small asyncio MLLP listener (loopback by default): each HIS message is mapped, forwarded, then ACKed.

ACK codes (original mode): AA when the hub took the status change (or already had it, or the message
carries no status), AE when the message itself is wrong (bad mapping, or the hub refused it: 4xx) so
the HIS should not resend it as is, AR when the hub could not be reached after retries: the HIS keeps
the message and resends it later. Every message goes through the outbox under its control id (MSH-10),
so a resent message is recognised and not applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from connectors.common.record import Parsed
from connectors.common.runner import Context, run_import
from connectors.hospital.connector import outbox_lookup, read_hl7
from connectors.hospital.hl7v2 import ack

log = logging.getLogger(__name__)
LAST_PORT = 0  # the port the last server bound (port 0 picks a free one; tests read it)


class Processor:
    """Maps and forwards one message at a time (the outbox connection is not shared across threads)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()

    def __call__(self, raw: str) -> str:
        with self._lock:
            parsed: Parsed = read_hl7(raw, self._ctx.settings.agency, outbox_lookup(self._ctx.outbox))
            facility = self._ctx.settings.agency
            try:
                if parsed.bad:
                    bad = parsed.bad[0]
                    return ack(raw, "AE", f"{bad.field}: {bad.reason}", facility)
                if not parsed.items:
                    return ack(raw, "AA", "", facility)
                report = run_import(parsed, self._ctx, source="mllp", dry_run=False)
            except ValueError as exc:  # unparseable even for an ACK: answer with a bare error
                log.warning("unparseable HL7 message: %s", exc)
                raise
            if report.bad_rows:
                bad = report.bad_rows[0]
                return ack(raw, "AE", f"{bad.field}: {bad.reason}", facility)
            if report.dead_letters:
                return ack(raw, "AR", "the hub is unavailable; send again later", facility)
            return ack(raw, "AA", "", facility)


async def serve(
    ctx: Context,
    host: str = "127.0.0.1",
    port: int = 2575,
    *,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Listen until ``stop`` is set (or forever); ``started`` is set once the port is bound."""
    from hl7.mllp import start_hl7_server

    process = Processor(ctx)

    async def on_client(reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break
                raw = block.decode("utf-8", errors="replace")
                try:
                    reply = await asyncio.to_thread(process, raw)
                except ValueError:
                    continue
                writer.writeblock(reply.encode("utf-8"))
                await writer.drain()
        finally:
            writer.close()

    global LAST_PORT
    server = await start_hl7_server(on_client, host, port, encoding="utf-8")
    LAST_PORT = server.sockets[0].getsockname()[1]
    log.info("MLLP listening on %s:%s", host, LAST_PORT)
    if started is not None:
        started.set()
    async with server:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
