"""Posted forms of the console, bounded, and where a page may send the browser next."""

from __future__ import annotations

from typing import Final

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from alerts.api_input import MAX_TEXT_CHARS

__all__ = ["MAX_FIELDS", "Form", "FormError", "path_of", "read_form", "root_of", "safe_next"]

MAX_FIELDS: Final = 1100
"""Fields one form may carry: a campaign's form has a checkbox per bolt (up to 1,000)."""


class FormError(ValueError):
    """A form field is missing or wrong (the message names it)."""


class Form:
    """A posted form's fields, bounded.

    Attributes:
        fields: The last value of each field.
        lists: Every value of each field, in order (checkboxes of one name).
    """

    def __init__(self, fields: dict[str, str], lists: dict[str, list[str]] | None = None) -> None:
        self.fields = fields
        self.lists = lists if lists is not None else {k: [v] for k, v in fields.items()}

    def text(self, name: str, limit: int = MAX_TEXT_CHARS, *, required: bool = True) -> str:
        """A text field, stripped.

        Raises:
            FormError: It is required and empty, or longer than ``limit``.
        """
        value = self.fields.get(name, "").strip()
        if required and not value:
            raise FormError(f"{name}: required")
        if len(value) > limit:
            raise FormError(f"{name}: at most {limit} characters")
        return value

    def number(self, name: str, low: float, high: float, *, required: bool = True) -> float | None:
        """A number field within (``low``, ``high``]; None when optional and empty.

        Raises:
            FormError: Missing, not a number, or out of range.
        """
        text = self.text(name, 64, required=required)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise FormError(f"{name}: not a number") from None
        if not low < value <= high:
            raise FormError(f"{name}: must be above {low:g} and at most {high:g}")
        return value


async def read_form(request: Request) -> Form:
    """The request's form (empty for a GET, or when it is malformed or oversized: its checks,
    CSRF first, then refuse it)."""
    if request.method != "POST":
        return Form({})
    try:
        async with request.form(max_files=0, max_fields=MAX_FIELDS) as form:
            lists: dict[str, list[str]] = {}
            for k, v in form.multi_items():
                if isinstance(v, str):
                    lists.setdefault(k, []).append(v)
            return Form({k: v[-1] for k, v in lists.items()}, lists)
    except (MultiPartException, HTTPException):
        return Form({})


def root_of(request: Request) -> str:
    """Where the console is mounted (``/console``; "" when served alone)."""
    return str(request.scope.get("root_path", ""))


def path_of(request: Request) -> str:
    """The console's root path for cookies (``/`` when served alone)."""
    return root_of(request) or "/"


def safe_next(target: str, request: Request) -> str:
    """Where to go after a login or an action: a path inside the console, never another site."""
    root = root_of(request)
    if target.startswith(root + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return root + "/"
