"""Reading a YAML file that may be hostile, in bounded time and memory.

:func:`read_yaml` is how sweep files (and the simulator's fault files) are read:

* only a regular file is opened (a FIFO, a device or a folder is refused before anything
  is read, and checked again on the open descriptor), at most ``max_bytes`` of it;
* UTF-8 text (a BOM is dropped);
* a first pass over the parser's events (no recursion) refuses nesting deeper than
  :data:`MAX_DEPTH` and documents that expand to more than :data:`MAX_NODES` nodes, counting
  each use of an alias as a copy of its anchor (the "billion laughs");
* then the safe loader builds the data, refusing a key given twice in one mapping
  (``line 7: duplicate key 'trials' (first on line 3)``); merge keys (``<<``) still work.

Every problem is a :class:`YamlFileError` with the line where it is known.
"""

from __future__ import annotations

import os
import stat
from functools import cache
from typing import Any

import yaml

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YamlFileError",
    "decode",
    "parse_yaml",
    "read_bytes",
    "read_yaml",
]

MAX_BYTES = 1024 * 1024
#: nesting of mappings and lists; a sweep file needs about 5
MAX_DEPTH = 50
#: nodes after expanding aliases; a sweep file has a few hundred
MAX_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlFileError(ValueError):
    """A file that cannot be read as YAML data: the ``problem`` and its 1-based ``line``."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        self.problem, self.line = problem, line
        super().__init__(f"line {line}: {problem}" if line is not None else problem)


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _check(st: os.stat_result, max_bytes: int, what: str) -> None:
    kind = _kind(st.st_mode)
    if kind is not None:
        raise YamlFileError(f"is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise YamlFileError(
            f"the file is {st.st_size:,} bytes; {what} are at most {_size(max_bytes)}"
        )


def _reason(exc: OSError | ValueError) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def read_bytes(path: str | os.PathLike[str], max_bytes: int, what: str = "files") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; nothing else is opened."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise YamlFileError("no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise YamlFileError(f"cannot read: {_reason(exc)}") from None
    _check(before, max_bytes, what)  # a FIFO is never opened, a device never read
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise YamlFileError(f"cannot read: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as fh:
        _check(os.fstat(fh.fileno()), max_bytes, what)  # replaced since the stat?
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise YamlFileError(f"cannot read: {_reason(exc)}") from None
    if len(data) > max_bytes:  # grew since the stat
        raise YamlFileError(
            f"the file is over {max_bytes:,} bytes; {what} are at most {_size(max_bytes)}"
        )
    return data


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM dropped); an invalid byte is named with its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line) from None


def read_yaml(
    path: str | os.PathLike[str],
    *,
    what: str = "files",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """The data of a YAML file, read within the limits (see the module docstring).
    ``what`` names the kind of file in the size message (``sweep files are at most 1 MiB``)."""
    text = decode(read_bytes(path, max_bytes, what))
    return parse_yaml(text, max_depth=max_depth, max_nodes=max_nodes)


def parse_yaml(text: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """YAML text as data: depth, expansion and duplicate keys checked."""
    parser, loader = _loaders()
    try:
        _scan(yaml.parse(text, Loader=parser), max_depth, max_nodes)
        return yaml.load(text, Loader=loader)  # a SafeLoader (or CSafeLoader) subclass
    except yaml.YAMLError as exc:
        raise _translate(exc, text, max_depth) from None
    except Exception as exc:  # pragma: no cover (the loader's bug: still one line, exit 2)
        raise YamlFileError(f"invalid YAML: {type(exc).__name__}: {exc}") from None


def _line(mark: Any) -> int | None:
    return int(mark.line) + 1 if mark is not None else None


def _translate(exc: yaml.YAMLError, text: str, max_depth: int) -> YamlFileError:
    if isinstance(exc, YamlLimitError):
        return YamlFileError(exc.problem, exc.line)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable"
        if "maximum nesting depth" in problem:  # libyaml's own limit, met while scanning ahead
            return YamlFileError(f"nested deeper than {max_depth} levels", _line(mark))
        return YamlFileError(f"invalid YAML: {problem}", _line(mark))
    if isinstance(exc, yaml.reader.ReaderError):
        position = int(exc.position)
        line = text.count("\n", 0, position) + 1 if 0 <= position <= len(text) else None
        return YamlFileError(f"invalid YAML: {exc.reason} (#x{exc.character:04x})", line)
    return YamlFileError(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}")


class YamlLimitError(yaml.YAMLError):
    """A file refused though YAML could read it: too deep, too big once aliases are
    expanded, an alias inside its own anchor, a duplicate key."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, _line(mark)


def _scan(events: Any, max_depth: int, max_nodes: int) -> None:
    """Walk the parser's events: refuse nesting deeper than ``max_depth`` and more than
    ``max_nodes`` nodes once aliases are expanded, before any data is built."""
    frames: list[list[Any]] = []  # per open collection: [anchor, expanded size]
    sizes: dict[str, int] = {}  # expanded size of each finished anchor
    total = 0
    for event in events:
        size = 0
        if isinstance(event, yaml.CollectionStartEvent):
            if len(frames) >= max_depth:
                raise YamlLimitError(f"nested deeper than {max_depth} levels", event.start_mark)
            frames.append([event.anchor, 1])
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = frames.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size, total = 1, total + 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in frames):
                raise YamlLimitError(
                    f"alias *{event.anchor} is used inside its own anchor", event.start_mark
                )
            size = sizes.get(event.anchor or "", 1)  # an unknown one: the loader says so
            total += size
        if frames and not isinstance(event, yaml.CollectionStartEvent):
            frames[-1][1] += size
        if total > max_nodes:
            raise YamlLimitError(
                f"the document has more than {max_nodes:,} values "
                "(each use of an alias counts as a copy of its anchor)",
                event.start_mark,
            )


class _NoDuplicates:
    """Constructor mix-in: a key given twice in one mapping is an error; values the safe
    constructor cannot build (an int of 5,000 digits, 2024-02-30, ``!!timestamp x``) are
    YAML errors with their line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)  # type: ignore[call-arg]
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes here before its merge keys are folded in (which rewrites
        # node.value); a merged mapping may pass again, already flattened: checked once.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                try:
                    seen = first.get(key)
                except TypeError:  # unhashable: the constructor says so
                    continue
                if seen is not None:
                    problem = f"duplicate key {_shown(key)} (first on line {seen})"
                    raise YamlLimitError(problem, key_node.start_mark)
                first[key] = key_node.start_mark.line + 1
        super().flatten_mapping(node)  # type: ignore[misc]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except yaml.YAMLError:
            raise
        except Exception as exc:  # an explicit tag on text it cannot take (!!timestamp x)
            value = node.value if isinstance(node, yaml.ScalarNode) else None
            reason = str(exc).split(";")[0]  # not Python's advice on int_max_str_digits
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_shown(value)}: {reason}", node.start_mark
            ) from None


def _shown(value: Any) -> str:
    if value is None or isinstance(value, str | int | float | bool):
        text = repr(value)
    else:
        text = f"this {type(value).__name__}"
    return text if len(text) <= 60 else text[:59] + "\u2026"


@cache
def _loaders() -> tuple[type[Any], type[Any]]:
    """(parser for the first pass, safe loader without duplicates), libyaml's when present."""
    base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = type("NoDuplicatesLoader", (_NoDuplicates, base), {})
    return base, loader
