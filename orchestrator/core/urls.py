"""Store URLs as users may see them: the one place that hides a password and finds a SQLite file.

* :func:`masked_url` -- the URL to show: a database URL through SQLAlchemy's own rendering
  (``make_url(url).render_as_string(hide_password=True)``), an ``http(s)://`` tracking URI
  (which SQLAlchemy does not own) with its user information masked;
* :func:`mask_secret` -- a message (a driver's error, say) with the URL's password replaced;
* :func:`bare_url` -- ``scheme://host[:port]/path`` with no user information, query or
  fragment: what a health probe requests, and safe to show;
* :func:`sqlite_path` -- the database file of a ``sqlite:`` URL (SQLAlchemy's ``.database``).

A database URL is split as SQLAlchemy's ``make_url`` splits it (:data:`_DB_URL`; a test
compares the two readings on URLs of every shape), so finding a SQLite file or seeing that
a URL has no password imports nothing; SQLAlchemy itself is imported only to render a URL
that has a password to hide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["MASK", "bare_url", "mask_secret", "masked_url", "sqlite_path"]

#: what a hidden password reads as
MASK = "***"
#: schemes that are not databases: SQLAlchemy's parser would take them, but they are not its
_WEB = ("http", "https")


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


#: a database URL as SQLAlchemy's ``make_url`` splits it (2.0), piece by piece: the scheme
#: (``backend[+driver]``), an optional ``user[:password]@`` (the user stops at ``:`` or ``/``,
#: the password at the first ``@``), an optional host (``[ipv6]`` or a name up to ``/``, ``:``
#: or ``?``) and ``:port``, then ``/database`` up to the query
_DB_URL = re.compile(
    r"(?P<name>[\w+]+)://"
    r"(?:[^:/]*(?::(?P<password>[^@]*))?@)?"
    r"(?:\[[^/?]+\]|[^/:?]+)?"
    r"(?::(?P<port>[^/?]*))?"
    r"(?:/(?P<database>[^?]*))?"
)


@dataclass(frozen=True)
class _Parts:
    """What SQLAlchemy's ``make_url`` reads of a database URL, as it reads it."""

    backend: str
    password: str | None
    database: str | None


def _parts(url: str) -> _Parts | None:
    """``url`` read as SQLAlchemy's ``make_url`` reads it (its pattern, the components
    percent-decoded, the port a number), without importing SQLAlchemy; None when it is no
    database URL or SQLAlchemy would not read it."""
    if _scheme(url) in ("", *_WEB):
        return None
    found = _DB_URL.match(url)
    if found is None:
        return None
    if found["port"]:
        try:
            int(found["port"])
        except ValueError:
            return None
    password, database = found["password"], found["database"]
    return _Parts(
        backend=found["name"].split("+")[0],
        password=unquote(password) if password is not None else None,
        database=unquote(database) if database is not None else None,
    )


def _database_url(url: str) -> URL | None:
    """SQLAlchemy's reading of ``url``, or None when it is not a database URL."""
    if _scheme(url) in ("", *_WEB):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def _split_password(url: str) -> str | None:
    """The password as :func:`urllib.parse.urlsplit` reads it (the last ``@`` of the
    authority ends it), or None."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def masked_url(url: str) -> str:
    """``url`` with its password shown as ``***``; unchanged when it has none.

    Database URLs are rendered by SQLAlchemy (which also percent-encodes the rest the way it
    reads it). Other URLs keep their text and lose the password; an ``http(s)://`` user name
    without a password is masked too (there it is usually a token). A password SQLAlchemy
    and :mod:`urllib.parse` read differently (an unencoded ``@`` in it) is masked up to the
    last ``@`` of the authority, so no part of it shows."""
    light = _parts(url)
    if light is not None and light.password is None:
        return url  # what SQLAlchemy's reading returns too, without importing it
    parsed = _database_url(url)
    if parsed is not None:
        if parsed.password is None:
            return url
        split = _split_password(url)
        if split is None or unquote(split) == parsed.password:
            return parsed.render_as_string(hide_password=True)
    return _masked_authority(url)


def _masked_authority(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url if "@" not in url else MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    if colon:
        shown = f"{user}:{MASK}"
    elif parts.scheme.lower() in _WEB:
        shown = MASK
    else:
        return url
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def _passwords(url: str) -> list[str]:
    """Every spelling of the password in ``url`` (as written, decoded, as SQLAlchemy reads
    it; an ``http(s)://`` user name without one), longest first."""
    found: set[str] = set()
    split = _split_password(url)
    if split:
        found |= {split, unquote(split)}
    parsed = _parts(url)
    if parsed is not None and parsed.password:
        found.add(parsed.password)
    if not found and _scheme(url) in _WEB:
        try:
            user = urlsplit(url).username
        except ValueError:
            user = None
        if user:
            found |= {user, unquote(user)}
    return sorted(found, key=len, reverse=True)


def mask_secret(text: str, url: str) -> str:
    """``text`` with every spelling of ``url``'s password replaced by ``***`` (for a driver's
    message, which may echo the connection arguments)."""
    for secret in _passwords(url):
        text = text.replace(secret, MASK)
    return text


def bare_url(url: str) -> str:
    """``scheme://host[:port]/path``: no user information, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (``sqlite:///x.db``, ``sqlite+pysqlite:////abs.db``);
    None for an in-memory database or any other URL."""
    if not _scheme(url).startswith("sqlite"):
        return None
    parsed = _parts(url)
    if parsed is None or parsed.backend != "sqlite":
        return None
    database = parsed.database
    return Path(database) if database and database != ":memory:" else None
