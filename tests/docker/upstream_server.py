"""A stand-in for api.anthropic.com (and any other host the tests need), run inside a
container from the proxy image: HTTPS on 443 with a test CA's certificate, HTTP on 80.

It never echoes a header back (the proxy would redact a reflected credential); it answers
with the SHA-256 of the Authorization header it received, so a test can check the real
secret arrived without the secret ever being printed.
"""

import hashlib
import json
import ssl
import sys

from aiohttp import web


async def messages(request: web.Request) -> web.Response:
    body = await request.read()
    auth = request.headers.get("Authorization", "")
    return web.json_response(
        {
            "type": "message",
            "content": [{"type": "text", "text": "hello from the stand-in upstream"}],
            "host": request.host,
            "auth_sha256": hashlib.sha256(auth.encode()).hexdigest(),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "x_team": request.headers.get("x-team"),  # a custom gateway header, not a secret
        }
    )


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello from {request.host}\n")


async def stream(request: web.Request) -> web.StreamResponse:
    """A line every 0.2 s until the client goes: a request in flight for the fault tests."""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    tick = 0
    while True:
        await resp.write(f"tick {tick}\n".encode())
        tick += 1
        await __import__("asyncio").sleep(0.2)


async def main() -> None:
    cert, key = sys.argv[1], sys.argv[2]
    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/stream", stream)
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    await web.TCPSite(runner, "0.0.0.0", 443, ssl_context=tls).start()
    await web.TCPSite(runner, "0.0.0.0", 80).start()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        await __import__("asyncio").sleep(3600)


if __name__ == "__main__":
    __import__("asyncio").run(main())
