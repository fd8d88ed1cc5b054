"""A fake OpenAI-compatible model server (vLLM-like) for the gateway tests and benchmark.

Run as ``python fake_upstream.py PORT [PORT ...]``: one process, one independent backend per port.
Each backend is controlled over HTTP on its own port:

- ``POST /_control`` with any of: ``latency_s`` (before answering), ``fail_status`` + ``fail_count`` (next N
  requests answer that status; ``fail_count: -1`` = until changed), ``drop_count`` (next N requests: connection
  closed without an answer), ``stream_chunks``, ``chunk_delay_s``, ``drop_after_chunks`` (stream breaks
  after k chunks), ``prompt_tokens``, ``completion_tokens`` (reported usage; None = chunks count),
  ``health_status``, ``omit_usage``.
- ``POST /_down`` closes the listening socket (connection refused); ``POST /_up`` reopens it — both through
  ``/_admin/<port>/down|up`` on any other port of the process, since a down port cannot be reached.
- ``GET /_log`` the requests served (path, body, x-request-id), ``POST /_reset`` clears log and settings.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

import orjson
from aiohttp import web

DEFAULTS: dict[str, Any] = {
    "latency_s": 0.0, "fail_status": 503, "fail_count": 0, "drop_count": 0, "stream_chunks": 5,
    "chunk_delay_s": 0.0, "drop_after_chunks": None, "prompt_tokens": 11, "completion_tokens": None,
    "health_status": 200, "omit_usage": False,
}


class Backend:
    def __init__(self, port: int) -> None:
        self.port = port
        self.settings: dict[str, Any] = dict(DEFAULTS)
        self.log: list[dict[str, Any]] = []
        self.counter = itertools.count(1)
        self.site: web.TCPSite | None = None
        self.runner: web.AppRunner | None = None

    # ---- control ----
    async def control(self, request: web.Request) -> web.Response:
        changes = await request.json()
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            return web.json_response({"error": f"unknown settings {sorted(unknown)}"}, status=400)
        self.settings.update(changes)
        return web.json_response(self.settings)

    async def reset(self, request: web.Request) -> web.Response:
        self.settings = dict(DEFAULTS)
        self.log.clear()
        return web.json_response({"ok": True})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.log), content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=self.settings["health_status"])

    # ---- OpenAI-compatible endpoints ----
    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        entry: dict[str, Any] = {"path": request.path, "body": body,
                                 "request_id": request.headers.get("x-request-id"), "chunks_sent": 0}
        self.log.append(entry)
        s = self.settings
        if s["drop_count"]:
            s["drop_count"] -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never delivered: the connection is gone
        if s["fail_count"]:
            if s["fail_count"] > 0:
                s["fail_count"] -= 1
            return web.json_response({"error": {"message": "fake failure", "type": "server_error"}},
                                     status=s["fail_status"])
        if s["latency_s"]:
            try:
                await asyncio.sleep(s["latency_s"])
            except asyncio.CancelledError:  # the client (the gateway) closed the connection: vLLM aborts
                entry["aborted"] = True
                raise
        serial = next(self.counter)
        model = body.get("model", "unknown")
        if request.path == "/v1/embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            return self.json({"object": "list", "model": model,
                              "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                                       for i in range(len(items))],
                              "usage": {"prompt_tokens": s["prompt_tokens"], "total_tokens": s["prompt_tokens"]}})
        if request.path == "/v1/rerank":
            docs = body.get("documents", [])
            return self.json({"id": f"rerank-{self.port}-{serial}", "model": model,
                              "results": [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(docs))],
                              "usage": {"total_tokens": s["prompt_tokens"]}})
        chunks = s["stream_chunks"]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens:
            chunks = min(chunks, max_tokens)
        completion_tokens = s["completion_tokens"] if s["completion_tokens"] is not None else chunks
        usage = {"prompt_tokens": s["prompt_tokens"], "completion_tokens": completion_tokens,
                 "total_tokens": s["prompt_tokens"] + completion_tokens}
        ident = f"cmpl-{self.port}-{serial}"
        chat = request.path == "/v1/chat/completions"
        if body.get("stream"):
            return await self.stream(request, body, ident, model, chat, chunks, usage, entry)
        text = "".join(f"tok{i} " for i in range(chunks))
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        payload: dict[str, Any] = {"id": ident, "object": "chat.completion" if chat else "text_completion",
                                   "created": int(time.time()), "model": model, "choices": [choice]}
        if not s["omit_usage"]:
            payload["usage"] = usage
        return self.json(payload)

    @staticmethod
    def json(payload: dict[str, Any]) -> web.Response:
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def stream(self, request: web.Request, body: dict[str, Any], ident: str, model: str, chat: bool,
                     chunks: int, usage: dict[str, int], entry: dict[str, Any]) -> web.StreamResponse:
        s = self.settings
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            data = {"id": ident, "object": kind, "created": created, "model": model, "choices": choices,
                    **(extra or {})}
            await response.write(b"data: " + orjson.dumps(data) + b"\n\n")

        if chat:  # vLLM's first chunk: the role, no token
            await event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(chunks):
            if s["drop_after_chunks"] is not None and i >= s["drop_after_chunks"]:
                assert request.transport is not None
                request.transport.close()
                return response
            if chat:
                await event([{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}])
            else:
                await event([{"index": 0, "text": f"tok{i} ", "finish_reason": None}])
            entry["chunks_sent"] = i + 1
            if s["chunk_delay_s"]:
                await asyncio.sleep(s["chunk_delay_s"])
        finish: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        finish.update({"delta": {}} if chat else {"text": ""})
        await event([finish])
        options = body.get("stream_options") or {}
        if options.get("include_usage") and not s["omit_usage"]:
            await event([], {"usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class FakeFleet:
    def __init__(self, ports: list[int]) -> None:
        self.backends = {port: Backend(port) for port in ports}

    def app_for(self, backend: Backend) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_control", backend.control)
        app.router.add_post("/_reset", backend.reset)
        app.router.add_get("/_log", backend.get_log)
        app.router.add_post("/_admin/{port}/{action}", self.admin)
        app.router.add_get("/health", backend.health)
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"):
            app.router.add_post(path, backend.handle)
        return app

    async def admin(self, request: web.Request) -> web.Response:
        backend = self.backends[int(request.match_info["port"])]
        if request.match_info["action"] == "down":
            await self.down(backend)
        else:
            await self.up(backend)
        return web.json_response({"ok": True})

    async def up(self, backend: Backend) -> None:
        if backend.site is not None:
            return
        if backend.runner is None:
            backend.runner = web.AppRunner(self.app_for(backend), access_log=None,
                                           handler_cancellation=True)
            await backend.runner.setup()
        backend.site = web.TCPSite(backend.runner, "127.0.0.1", backend.port, reuse_address=True)
        await backend.site.start()

    async def down(self, backend: Backend) -> None:
        """Like a crashed server: listening socket and every open connection closed."""
        if backend.runner is not None:
            await backend.runner.cleanup()
        backend.site = None
        backend.runner = None

    async def run(self) -> None:
        for backend in self.backends.values():
            await self.up(backend)
        print("ready", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    ports = [int(arg) for arg in sys.argv[1:]]
    try:
        import uvloop

        uvloop.run(FakeFleet(ports).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
