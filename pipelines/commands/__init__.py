"""One module per command group; each exposes `register(subparsers)`."""

from pipelines.commands import (
    augment,
    compare,
    data,
    evaluate,
    export,
    models,
    recommend,
    serve,
    train,
    tune,
)

COMMANDS = (data, train, augment, evaluate, recommend, compare, export, models, serve, tune)
