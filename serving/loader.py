"""Build an Engine from settings: the model, the items to exclude and the item attributes."""

from __future__ import annotations

from recsys.data.files import read_seen
from recsys.data.io import read_table
from recsys.errors import RecsysError
from recsys.store import open_model, redact
from serving.engine import Engine
from serving.settings import Settings


def load_engine(settings: Settings, ref: str | None = None) -> Engine:
    """Load `ref` (default: settings.model), a model folder or an MLflow registry URI.

    Any failure is one RecsysError (credentials in URIs redacted), so a failed reload is a 400
    and the model being served stays.
    """
    ref = ref or settings.model
    try:
        model, seen, version = open_model(ref)
        if settings.train:
            seen = read_seen(settings.train, model, ref)
        elif seen is None:
            raise RecsysError(f"{ref} stores no training items: pass --train FILE")
        attributes = (read_table(settings.item_attributes, ["item_id"]) if settings.item_attributes
                      else None)
        return Engine(model, seen, version=version, source=ref, attributes=attributes,
                      attributes_source=str(settings.item_attributes))
    except RecsysError as exc:
        raise RecsysError(redact(str(exc))) from exc
    except Exception as exc:  # noqa: BLE001 (a broken model folder fails in many ways)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise RecsysError(redact(f"{ref}: cannot be loaded: {type(exc).__name__}: {first}")) from exc
