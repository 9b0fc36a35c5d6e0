"""`recsys serve`: the online scoring endpoint (FastAPI under uvicorn)."""

from __future__ import annotations

import argparse
import os

from pipelines.commands.common import non_negative_float, port, positive_int
from recsys.errors import RecsysError


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from serving.app import create_app
        from serving.loader import load_engine
        from serving.observe import configure_access_log
        from serving.settings import ENV_PREFIX, Settings
    except ImportError as exc:
        raise RecsysError(f"serving needs the [serve] extra ({exc.name} is missing): "
                          "pip install 'recsys[serve]'") from None
    settings = Settings.from_env(model=args.model, train=args.train,
                                 item_attributes=args.item_attributes, max_k=args.max_k,
                                 access_log=args.access_log)
    configure_access_log(settings.access_log)
    server = dict(host=args.host, port=args.port, timeout_graceful_shutdown=args.graceful_timeout,
                  access_log=False, log_level="info")
    if args.workers > 1:  # each worker process loads the model itself, from the environment
        for name, value in settings.model_dump(exclude_none=True).items():
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            os.environ[ENV_PREFIX + name.upper()] = str(raw)
        uvicorn.run("serving.app:create_app_from_env", factory=True, workers=args.workers, **server)
        return
    engine = load_engine(settings)  # before binding the port: a bad model fails fast
    print(f"serving {engine.model_name} {engine.version} from {engine.source} on "
          f"http://{args.host}:{args.port} (API docs at /docs)", flush=True)
    uvicorn.run(create_app(settings, engine), **server)


def register(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="serve recommendations over HTTP (needs the [serve] extra)",
                         description="Online scoring endpoint. Settings may also come from "
                         "RECSYS_SERVE_* variables; the /admin/reload token only does "
                         "(RECSYS_SERVE_ADMIN_TOKEN), so it never shows in a process list.")
    srv.add_argument("--model", help="model folder, models:/NAME@ALIAS or models:/NAME/VERSION "
                     "(default: RECSYS_SERVE_MODEL)")
    srv.add_argument("--train", help="training file whose items are excluded (default: the "
                     "ones stored with the model)")
    srv.add_argument("--item-attributes", help="CSV/Parquet: item_id + categorical columns that "
                     "requests may filter on ('|' separates several values)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=port, default=8000, help="port in 1..65535 (default 8000)")
    srv.add_argument("--max-k", type=positive_int, help="largest k a request may ask for (default 1000)")
    srv.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    srv.add_argument("--graceful-timeout", type=non_negative_float, default=10.0,
                     help="seconds to let in-flight requests finish on shutdown (default 10)")
    srv.add_argument("--no-access-log", dest="access_log", action="store_const", const=False,
                     help="do not print a JSON line per request")
    srv.set_defaults(func=cmd_serve)
