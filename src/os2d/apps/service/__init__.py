"""HTTP service for OS2D (``os2d serve``): a persistent class gallery and detection over a JSON API.

Needs the ``serve`` extra (``pip install os2d[serve]``: fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServiceSettings", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from os2d.apps.service.app import ServiceSettings, create_app


def __getattr__(name: str) -> Any:  # lazy: importing os2d.apps.service must not need fastapi yet
    if name in __all__:
        from os2d.apps.service import app

        return getattr(app, name)
    raise AttributeError(name)
