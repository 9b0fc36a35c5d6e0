"""Online scoring service: a FastAPI app over an exported recsys model."""

from serving.app import create_app
from serving.settings import Settings

__all__ = ["Settings", "create_app"]
