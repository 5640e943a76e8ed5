"""The HTTP gateway: ``predictq api`` serves ``create_app()`` under uvicorn.

Needs the ``api`` extra: ``pip install 'predictq[api]'``.
"""

from .app import create_app
from .auth import KeyRing, Principal, Scope

__all__ = ["KeyRing", "Principal", "Scope", "create_app"]
