"""A proxy that does nothing: the floor any Python gateway on uvicorn + aiohttp stands on.

    python benchmarks/passthrough_proxy.py PORT UPSTREAM_URL

It forwards each request body to UPSTREAM_URL and the answer back, with the
same server (uvicorn, uvloop, httptools) and upstream client (aiohttp) as
distillguard, and none of its work: no auth, limits, token count or event.
gateway_bench.py runs it beside distillguard, so what distillguard adds over
it is the cost of its own work and what it adds over direct is the hop.
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn

UPSTREAM = sys.argv[2] if len(sys.argv) > 2 else ""
_session: aiohttp.ClientSession | None = None


async def app(scope, receive, send) -> None:
    global _session
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if _session is None:  # inside the server's event loop
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    async with _session.post(
        UPSTREAM, data=body, headers={"content-type": "application/json"}
    ) as reply:
        answer = await reply.read()
        status = reply.status
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
