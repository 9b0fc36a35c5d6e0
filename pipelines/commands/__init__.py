"""One module per command group; each exposes `register(subparsers)`."""

from pipelines.commands import compare, data, evaluate, export, models, recommend, serve, train

COMMANDS = (data, train, evaluate, recommend, compare, export, models, serve)
