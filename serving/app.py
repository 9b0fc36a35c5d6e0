"""The FastAPI app factory: endpoints over an Engine that can be swapped while serving."""

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from recsys.errors import RecsysError
from serving import schemas
from serving.batcher import RecommendBatcher
from serving.engine import Engine, Query, Ranked, RequestError
from serving.loader import load_engine
from serving.observe import Metrics, ObserveMiddleware, configure_access_log
from serving.settings import Settings
from serving.validation import StrictJSONRoute, short, validation_error

log = logging.getLogger("recsys.serving")


class ServingState:
    """The engine being served and how it got there; `engine` is replaced, never mutated."""

    def __init__(self, settings: Settings, metrics: Metrics, engine: Engine | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine: Engine | None = None
        self.error: str | None = None
        self.reload_lock = asyncio.Lock()
        if engine is not None:
            self.install(engine)

    def install(self, engine: Engine) -> None:
        self.engine, self.error = engine, None  # one reference assignment: the atomic swap
        self.metrics.serving(engine.model_name, engine.version, engine.source)
        log.info("serving %s %s from %s", engine.model_name, engine.version, engine.source)

    async def load(self, ref: str | None = None) -> Engine:
        """Build an engine off the event loop (requests keep flowing), then swap it in."""
        async with self.reload_lock:
            try:
                engine = await run_in_threadpool(load_engine, self.settings, ref)
            except RecsysError as exc:  # load_engine turns any failure into one
                self.metrics.reloads.labels("failed").inc()
                if self.engine is None:
                    self.error = str(exc)
                raise
            self.metrics.reloads.labels("ok").inc()
            self.install(engine)
            return engine


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """An app serving `engine`, or the model in `settings` loaded in the background at startup
    (/readyz answers 503 until it is in memory)."""
    metrics = Metrics()
    state = ServingState(settings, metrics, engine)
    batcher = RecommendBatcher()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if state.engine is None:
            task = asyncio.create_task(_initial_load(state))
        yield
        if task is not None and not task.done():
            task.cancel()
        await batcher.stop()

    app = FastAPI(title="recsys scoring", lifespan=lifespan, max_body_size=settings.max_body_bytes,
                  description="Top-k recommendations, scores and similar items from a recsys model.")
    app.router.route_class = StrictJSONRoute
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.serving = state
    app.add_middleware(ObserveMiddleware, metrics=metrics)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    async def current_engine() -> Engine:  # async: no thread hop per request
        engine = state.engine
        if engine is None:
            raise HTTPException(503, state.error or "the model is still loading")
        return engine

    ServedEngine = Annotated[Engine, Depends(current_engine)]

    def within(what: str, value: int, setting: str) -> None:
        limit = getattr(settings, setting)
        if value > limit:
            raise RequestError(f"{what}: {value} exceeds this server's {setting} of {limit}")

    def check(body: schemas._Ranking, users: int = 1, history: int = 0) -> None:
        within("k", body.k, "max_k")
        within("user_ids", users, "max_batch_users")
        within("history", history, "max_item_ids")
        within("item_ids", len(body.item_ids or ()), "max_item_ids")
        within("exclude_item_ids", len(body.exclude_item_ids), "max_item_ids")

    def ranked_items(ranked: Ranked) -> list[dict]:
        return [{"item_id": i, "score": s, "rank": r}
                for r, (i, s) in enumerate(zip(ranked.item_ids, ranked.scores, strict=True), start=1)]

    def recommendation(user_id, ranked: Ranked, unknown_features: dict | None = None) -> dict:
        if ranked.fallback:
            metrics.fallbacks.inc()
        return {"user_id": user_id, "fallback": ranked.fallback, "folded_in": ranked.folded_in,
                "items": ranked_items(ranked), "unknown_item_ids": ranked.unknown_item_ids,
                "unknown_feature_values": unknown_features or {}}

    @app.post("/recommend", response_model=schemas.RecommendResponse)
    async def recommend(body: schemas.RecommendRequest, engine: ServedEngine):
        """Top-k items for one user. A user the model does not know is answered from `history`
        and/or `features` when given and the model can (`folded_in`), else with the most
        popular items (`fallback`). `grade` ranks by a level of a graded model."""
        check(body, history=len(body.history or ()))
        engine = engine.at_grade(body.grade)
        features, unknown = engine.features(body.features)
        if body.item_ids is None and not body.exclude_item_ids and not body.filters:
            ranked = await batcher.recommend(engine, Query(
                body.user_id, history=body.history, features=features, k=body.k,
                exclude_seen=body.exclude_seen))
        else:
            ranked = engine.recommend(body.user_id, body.k, exclude_seen=body.exclude_seen,
                                      history=body.history, features=features,
                                      item_ids=body.item_ids,
                                      exclude_item_ids=body.exclude_item_ids, filters=body.filters)
        return {**recommendation(body.user_id, ranked, unknown), "model_version": engine.version}

    @app.post("/recommend/batch", response_model=schemas.BatchRecommendResponse)
    def recommend_batch(body: schemas.BatchRecommendRequest, engine: ServedEngine):
        """Top-k items for several users (run off the event loop: it may take a while)."""
        check(body, users=len(body.user_ids),
              history=sum(len(items) for items in (body.history or {}).values()))
        requested = {str(u) for u in body.user_ids}
        for field, per_user in (("history", body.history), ("features", body.features)):
            stray = [user for user in per_user or {} if user not in requested]
            if stray:
                raise RequestError(f"{field}: user id {short(stray[0])} is not one of user_ids "
                                   "(keys are user ids as text)")
        engine = engine.at_grade(body.grade)
        checked = {user: engine.features(values, f"features.{user}")
                   for user, values in (body.features or {}).items()}
        ranked = engine.recommend_many(body.user_ids, body.k, exclude_seen=body.exclude_seen,
                                       history=body.history,
                                       features={u: row for u, (row, _) in checked.items()},
                                       item_ids=body.item_ids,
                                       exclude_item_ids=body.exclude_item_ids, filters=body.filters)
        return {"model_version": engine.version,
                "results": [recommendation(u, r, checked.get(str(u), (None, {}))[1])
                            for u, r in zip(body.user_ids, ranked, strict=True)]}

    @app.post("/score", response_model=schemas.ScoreResponse)
    async def score(body: schemas.ScoreRequest, engine: ServedEngine):
        """The model's scores of the given items for a user, in request order."""
        within("item_ids", len(body.item_ids), "max_item_ids")
        within("history", len(body.history or ()), "max_item_ids")
        engine = engine.at_grade(body.grade)
        features, unknown = engine.features(body.features)
        ranked = engine.score(body.user_id, body.item_ids, history=body.history, features=features)
        if ranked.fallback:
            metrics.fallbacks.inc()
        pairs = zip(ranked.item_ids, ranked.scores, strict=True)
        return {"user_id": body.user_id, "fallback": ranked.fallback, "folded_in": ranked.folded_in,
                "model_version": engine.version,
                "scores": [{"item_id": i, "score": s} for i, s in pairs],
                "unknown_item_ids": ranked.unknown_item_ids, "unknown_feature_values": unknown}

    @app.get("/similar/{item_id}", response_model=schemas.SimilarResponse)
    async def similar(item_id: str, engine: ServedEngine, k: int = 10):
        """Items whose factors are closest (cosine) to the item's."""
        if not 1 <= k <= settings.max_k:
            raise RequestError(f"k: {k} must be between 1 and this server's max_k of {settings.max_k}")
        ranked = engine.similar(item_id, k)
        index = engine.items.get(item_id)
        item_id = engine.items.ids[index:index + 1].tolist()[0]  # the model's id, of its type
        return {"item_id": item_id, "model_version": engine.version,
                "items": ranked_items(ranked)}

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is alive (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.ModelStatus,
             responses={503: {"model": schemas.ModelStatus}})
    async def readyz():
        """200 once a model is in memory, 503 while loading or after a failed first load."""
        engine = state.engine
        if engine is None:
            status = "failed" if state.error else "loading"
            return JSONResponse({"status": status, "error": state.error}, status_code=503)
        return ready(engine)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text: request counts, latency histograms, fallbacks, the model version."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    bearer = HTTPBearer(auto_error=False)

    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    async def require_admin(credentials: Credentials) -> None:
        if settings.admin_token is None or not settings.admin_token.get_secret_value():
            raise HTTPException(403, "reload is disabled: no admin token is configured "
                                "(RECSYS_SERVE_ADMIN_TOKEN is unset or empty)")
        expected = settings.admin_token.get_secret_value().encode()
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.post("/admin/reload", response_model=schemas.ModelStatus, dependencies=[Depends(require_admin)])
    async def reload(body: schemas.ReloadRequest | None = None):
        """Load a model (default: the configured one again) and swap it in atomically; on failure
        the current model keeps serving."""
        try:
            engine = await state.load(body.model if body else None)
        except RecsysError as exc:
            raise HTTPException(400, f"reload failed, still serving the previous model: {exc}") from None
        return ready(engine)

    return app


def ready(engine: Engine) -> dict:
    return {"status": "ready", "model": engine.model_name, "version": engine.version,
            "source": engine.source, "n_users": len(engine.users.ids), "n_items": engine.n_items,
            "factor_bytes": engine.factor_bytes}


def create_app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` (several workers): settings from RECSYS_SERVE_*."""
    settings = Settings.from_env()
    configure_access_log(settings.access_log)
    return create_app(settings)


async def _initial_load(state: ServingState) -> None:
    try:
        await state.load()
    except RecsysError as exc:
        log.error("cannot load the model: %s", exc)
