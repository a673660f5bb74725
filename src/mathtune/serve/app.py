"""The OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions` (server-sent events or one JSON body) and
`/health`, on FastAPI. Every error a client can cause is a 4xx with OpenAI's body
`{"error": {"message", "type", "param", "code"}}`; the request is refused before it reaches the batch worker."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.tokenize import char_limit
from ..errors import UserError
from .batcher import Batcher, Delta, Done, Event, Failed, QueueFull
from .batcher import Request as Work
from .models import ServedModels


class APIError(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(error_body(self.message, self.kind, self.param, self.code), self.status, headers=headers)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- request schema (strict: a number sent as text is a wrong type, as in OpenAI's API) ---

class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # None: 1, as in OpenAI's API
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**32)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop: up to 4 sequences, none empty", param="stop")
    return stops


# --- the app ---

def create_app(models: ServedModels, batcher: Batcher, api_key: str | None = None,
               default_max_tokens: int = 512) -> FastAPI:
    """The FastAPI app serving `models` through `batcher`; the worker is closed when the app shuts down (uvicorn
    first waits for the requests in flight: Ctrl-C drains)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="mathtune", lifespan=lifespan, docs_url=None, redoc_url=None)
    created = int(time.time())
    limit = char_limit(models.tokenizer, models.context) if models.context else None
    key = api_key.encode() if api_key else None

    def authorized(request: Request) -> None:
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error",
                           code="invalid_api_key")

    _errors(app)
    auth = [Depends(authorized)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **batcher.stats()}

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "mathtune"}
                                           for name in models.names]}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(body: ChatRequest, request: Request) -> Any:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        with batcher.arriving():
            work = await run_in_threadpool(_checked, body, models, limit, default_max_tokens)
            try:
                job = batcher.submit(work, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
            except QueueFull as exc:
                raise APIError(429, f"too many requests: {exc}; retry later", "rate_limit_error",
                               code="rate_limit_exceeded") from None
        reply = Reply(work, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))
        if work.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(reply, events, batcher, job, include_usage), media_type="text/event-stream")
        return await _whole(reply, events, batcher, job, request)

    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body" and not _type_tag(part))
        if first.get("type") == "json_invalid":
            return APIError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})"
                            ).response()
        return APIError(400, f"{where or 'body'}: {first.get('msg')}", param=where or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind).response()

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").response()


def _type_tag(part: Any) -> bool:
    """A union member's name in pydantic's error location ('str', 'list[TextPart]'), not a field of the request."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part or
                                      part[:1].isupper())


def _checked(body: ChatRequest, models: ServedModels, limit: int | None, default_max_tokens: int) -> Work:
    """The request as the worker takes it, or the APIError a client gets (run in a thread: it tokenizes)."""
    if body.model not in models.names:
        raise APIError(404, f"model '{body.model}' is not served here; served: {', '.join(models.names)}",
                       "not_found_error", "model", "model_not_found")
    if body.logprobs or body.tools:
        raise APIError(400, "logprobs and tools are not supported by this server",
                       param="logprobs" if body.logprobs else "tools")
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    for number, message in enumerate(messages):
        try:
            message["content"].encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(400, f"messages.{number}.content holds a lone surrogate, which is not text",
                           param=f"messages.{number}.content") from None
    context = models.context
    chars = sum(len(m["content"]) for m in messages)
    if limit is not None and chars > limit:  # refused before tokenizing, which alone takes minutes for 20 MB
        raise APIError(400, f"the prompt is {chars:,} characters, far beyond the model's context of {context:,} "
                       "tokens", param="messages", code="context_length_exceeded")
    try:
        prompt = len(_render(models, messages))
    except UserError as exc:
        raise APIError(400, f"messages: {exc}", param="messages") from None
    asked = body.max_completion_tokens or body.max_tokens
    room = context - prompt if context else None
    if room is not None and (room < 1 or (asked is not None and asked > room)):
        raise APIError(400, f"the prompt is {prompt:,} tokens and {asked or 1:,} more were asked for: beyond the "
                       f"model's context of {context:,} tokens", param="messages", code="context_length_exceeded")
    temperature = 1.0 if body.temperature is None else body.temperature
    return Work(model=body.model, messages=messages, prompt_tokens=prompt,
                max_tokens=asked or min(default_max_tokens, room or default_max_tokens), temperature=temperature,
                top_p=1.0 if body.top_p is None else body.top_p, n=body.n, seed=body.seed, stop=_stops(body.stop),
                stream=body.stream)


def _render(models: ServedModels, messages: list[dict[str, str]]) -> list[int]:
    from ..data.tokenize import render_ids

    return render_ids(models.tokenizer, messages, add_generation_prompt=True)


class Reply:
    """The response's fixed fields and the chunks of a streamed one."""

    def __init__(self, work: Work, reply_id: str, created: int) -> None:
        self.work, self.id, self.created = work, reply_id, created

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = self.work.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens}

    def whole(self, done: Done) -> dict[str, Any]:
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                    "logprobs": None} for i, (text, reason) in enumerate(zip(done.texts, done.reasons, strict=True))]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.work.model,
                "choices": choices, "usage": self.usage(done.completion_tokens)}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        data: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.work.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def piece(self, index: int, delta: dict[str, str], finish: str | None = None) -> str:
        return self.chunk([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}])


async def _whole(reply: Reply, events: asyncio.Queue[Event], batcher: Batcher, job: Any,
                 request: Request) -> JSONResponse:
    """Wait for the replies, watching for the client leaving meanwhile (which frees its place)."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    batcher.cancel(job)
                    return JSONResponse(error_body("client left", "invalid_request_error"), 499)
                continue
            if isinstance(event, Done):
                return JSONResponse(reply.whole(event))
            if isinstance(event, Failed):
                raise APIError(500, event.message, "server_error")
    finally:
        if not job.done:
            batcher.cancel(job)


async def _sse(reply: Reply, events: asyncio.Queue[Event], batcher: Batcher, job: Any,
               include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events as OpenAI sends them: the role first, the text as it comes, then each choice's
    finish_reason, the usage when asked for, and [DONE]. A client that leaves ends this generator (its next send
    fails, or Starlette cancels it), which cancels the job."""
    shown = {index: "" for index in range(reply.work.n)}
    try:
        for index in shown:
            yield reply.piece(index, {"role": "assistant", "content": ""})
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                for index, text in event.texts.items():
                    shown[index] += text
                    yield reply.piece(index, {"content": text})
            elif isinstance(event, Done):
                for index, (text, reason) in enumerate(zip(event.texts, event.reasons, strict=True)):
                    rest = text[len(shown[index]) :] if text.startswith(shown[index]) else ""
                    if rest:
                        yield reply.piece(index, {"content": rest})
                    yield reply.piece(index, {}, reason)
                if include_usage:
                    yield reply.chunk([], reply.usage(event.completion_tokens))
                yield "data: [DONE]\n\n"
                return
            else:
                yield f"data: {json.dumps(error_body(event.message, 'server_error'))}\n\n"
                return
    finally:
        if not job.done:
            batcher.cancel(job)
