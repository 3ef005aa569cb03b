"""A stand-in for a hosted OpenAI-compatible model (an outside service, named so): an aiohttp app on a loopback
port that streams what the test tells it to say. No outside model is ever contacted."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web


class StandInModel:
    """A stand-in for a hosted OpenAI-compatible model: streams what the test tells it to say."""

    def __init__(self) -> None:
        self.reply = ""
        self.delay = 0.0
        self.requests: list[dict] = []

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(self.delay)
        for word in self.reply.split(" "):
            chunk = {"choices": [{"delta": {"content": word + " "}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


async def serve_stand_in(stand_in: StandInModel) -> tuple[web.AppRunner, str]:
    """Serve a stand-in model on a loopback port: (its runner, to clean up; its base URL)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stand_in.completions)
    return await serve_on_loopback(app)


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """A stand-in's app on a free loopback port: (its runner, to clean up; its base URL, …/v1)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"
