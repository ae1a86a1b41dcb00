"""Safe, located YAML reading.

Recipes and registry files are data, never code: only the standard YAML tags are accepted, aliases
cannot expand without bound, and every value keeps the line it came from so that later validation
errors can point at it. The result is plain Python (dict, list, str, int, float, bool, None) plus a
`LineMap` from field paths to 1-based line numbers.

Files from others are untrusted, so reading is bounded: only regular files are opened (a FIFO,
device or socket is refused without blocking), at most MAX_FILE_BYTES are read, nesting deeper than
MAX_DEPTH and more than MAX_VALUES keys/items are refused by a linear pre-pass before the YAML
scanner sees the text, and every later step (one parse, one walk over the nodes) is linear in the
size of the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError, Problem, short

if TYPE_CHECKING:
    from pydantic import ValidationError
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import SafeConstructor
    from ruamel.yaml.nodes import Node
    from ruamel.yaml.scanner import Scanner

# The largest recipe is ~17 KiB and the largest registry file ~14 KiB; 64 KiB leaves room to grow
# while keeping the worst case fast: ruamel's pure-Python scanner needs ~50 µs per value, so a
# 64 KiB file dense with values parses in ~0.3 s (256 KiB took over a second).
MAX_FILE_BYTES = 64 * 1024
MAX_NODES = 50_000  # after alias expansion ("billion laughs"); real files have under 400 values
MAX_DEPTH = 32  # nested lists/mappings; real recipes use fewer than 10
# Keys, items and flow entries, counted before parsing; real files have under 1,000. Parsing costs
# ~50-100 µs per value, so this bounds the parse of the densest file (`[1, 1, 1, ...]`) to ~0.3 s.
MAX_VALUES = 5_000

_STANDARD_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "omap")
}

PathKey = tuple[str | int, ...]


@dataclass
class LineMap:
    """Field path -> 1-based line of the key (mappings) or item (sequences) that holds it."""

    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_for(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of `path` (validation paths may run deeper)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)

    def to_json(self) -> list[list[Any]]:
        return [[list(k), v] for k, v in self.lines.items()]

    @classmethod
    def from_json(cls, rows: list[list[Any]]) -> LineMap:
        return cls({tuple(k): v for k, v in rows})


def format_path(path: Sequence[str | int], data: Any = None) -> str:
    """("stages", 0, "schedule") -> "stages[0].schedule"; with the data the path runs through, list
    items are named as provenance names them: "stages[anneal].schedule", "components[dclm].share",
    "merges[soup].inputs[0].stage" (items with a `name`, `source` or `benchmark`; others by index)."""
    item_key: Callable[[Any, int], str] | None = None
    if data is not None:
        from midtrain.schema.provenance import _item_key

        item_key = _item_key
    out = ""
    node = data
    for part in path:
        if isinstance(part, int):
            if item_key is not None and isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                out += f"[{item_key(node, part)}]"
            else:
                node = None
                out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _size_limit() -> str:
    return f"the size limit of {MAX_FILE_BYTES // 1024} KiB"


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def _not_regular(path: Path, mode: int) -> MidtrainError:
    found = _file_kind(mode)
    if os.path.islink(path):
        with contextlib.suppress(OSError, ValueError):
            found += f" (symlink to {os.path.realpath(path)})"
    return MidtrainError.single(
        "not a regular file, so it was not read",
        file=path,
        expected=f"a regular file within {_size_limit()}",
        found=found,
    )


def _too_large(path: Path, found: str) -> MidtrainError:
    return MidtrainError.single(
        f"file is too large to be a recipe or registry file (over {_size_limit()})",
        file=path,
        expected=f"at most {MAX_FILE_BYTES // 1024} KiB",
        found=found,
    )


def _os_error(path: Path, exc: OSError) -> MidtrainError:
    """An OSError from stat/open/read as a located message (never a traceback)."""
    code = exc.errno
    name = f" [{errno.errorcode[code]}]" if code is not None and code in errno.errorcode else ""
    if code == errno.ELOOP:
        return MidtrainError.single(
            f"symlink loop: following the link never reaches a file{name}",
            file=path,
            expected="a regular file",
            found="a cycle of symbolic links",
        )
    if code in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return MidtrainError.single(
                f"dangling symlink: its target does not exist{name}",
                file=path,
                expected="a regular file",
                found=f"a link to {target}",
            )
        return MidtrainError.single("file not found", file=path)
    if code in (errno.ENXIO, errno.EAGAIN, errno.EWOULDBLOCK, errno.ENODEV):
        return MidtrainError.single(
            f"not a regular file, so it was not read{name}",
            file=path,
            expected=f"a regular file within {_size_limit()}",
        )
    from midtrain.io import os_error

    return os_error(exc, path)


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_limited(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a MidtrainError.

    Never blocks and never reads without bound: the path is stat'ed first (FIFOs, devices and
    sockets are refused unopened), opened with O_NONBLOCK, checked again with fstat (it may have
    been swapped in between), and read up to `limit` + 1 bytes.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    except ValueError:  # e.g. a NUL byte in the path
        raise MidtrainError.single("invalid file name", file=path) from None
    if stat.S_ISDIR(info.st_mode):
        raise MidtrainError.single(
            "is a directory, expected a YAML file", file=path, expected="a .yaml file", found="a directory"
        )
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    if info.st_size > limit:
        raise _too_large(path, f"{info.st_size // 1024} KiB")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _too_large(path, f"more than {limit // 1024} KiB")
    return data


def read_text(path: Path) -> str:
    """Read a small UTF-8 text file, or raise a MidtrainError that says what is wrong with it."""
    data = read_limited(path)
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise MidtrainError.single(
            "binary file (contains NUL bytes)", file=path, line=line, expected="UTF-8 text", found="binary data"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MidtrainError.single(
            "file is not valid UTF-8",
            file=path,
            line=line,
            expected="UTF-8 text",
            found=f"byte 0x{data[exc.start]:02x} at offset {exc.start}",
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise MidtrainError.single("file is empty", file=path, expected="a YAML mapping", found="nothing")
    return text


# ---------------------------------------------------------------- nesting depth, before any YAML scanner runs

_SPECIAL = re.compile(r"""[\[\]{},:#'"|>!&*]""")
_SINGLE_END = re.compile(r"[^']*(?:''[^']*)*'(?!')")  # the rest of a '...' scalar ('' is a quote)
_DOUBLE_END = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"')  # the rest of a "..." scalar (\ escapes)
_PROPERTY = re.compile(r"[^ \t,\[\]{}]*")  # a tag, anchor or alias name
_BLOCK_HEADER = re.compile(r"[-+0-9]*[ \t]*(?:#.*)?$")  # what may follow | or > on its line


def _too_deep(path: Path, line: int | None, limit: int = MAX_DEPTH) -> MidtrainError:
    return MidtrainError.single(
        f"YAML nesting depth exceeds {limit} levels (lists/mappings inside each other)",
        file=path,
        line=line,
        expected=f"at most {limit} nested lists/mappings",
        found="deeper nesting",
    )


def _too_many(path: Path, line: int) -> MidtrainError:
    return MidtrainError.single(
        f"too many values for a recipe or registry file (more than {MAX_VALUES:,} keys, items and list entries)",
        file=path,
        line=line,
        expected=f"at most {MAX_VALUES:,} values",
        found="more",
    )


def check_nesting(path: Path, text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse text nested deeper than `limit` lists/mappings, in one linear pass over the characters.

    This runs before the YAML scanner: ruamel's scanner does work proportional to the flow depth for
    every token (10,000 nested `[` take minutes) and its composer recurses once per level. The count
    follows flow brackets outside quoted scalars, comments and block scalars, plus block indentation
    levels; it may over-count a little (a bracket that starts a line of plain text), never the
    brackets that the scanner would nest. The same pass counts keys, items and flow entries and
    refuses more than MAX_VALUES, which bounds the time the parse takes.
    """
    scan = _NestingScan(path, limit)
    for number, line in enumerate(text.split("\n"), start=1):
        scan.line(number, line[:-1] if line.endswith("\r") else line)


class _NestingScan:
    """check_nesting's state between lines: the open block collections and flow brackets, a quoted
    or block scalar that runs on over lines, and the values counted so far."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.values = 0  # block lines and "- " items, flow collections and entries
        self.stack: list[int] = []  # columns of the open block collections
        self.flow = 0  # open [ and { (outside quoted scalars)
        self.quote = ""  # "'" or '"' while a quoted scalar runs over lines
        self.owner = -1  # inside a | or > scalar: lines indented more than this column are its text

    def line(self, number: int, line: str) -> None:
        n = len(line)
        if self.owner >= 0:
            indent = n - len(line.lstrip(" "))
            if indent == n or indent > self.owner:
                return
            self.owner = -1
        i = key_col = dash_col = 0
        if not self.quote and not self.flow:
            start = self._block_start(number, line)
            if start is None:
                return
            i, key_col, dash_col = start
        self._scan(number, line, i, key_col, dash_col)
        if self.values > MAX_VALUES:
            raise _too_many(self.path, number)

    def _block_start(self, number: int, line: str) -> tuple[int, int, int] | None:
        """A line in block context: its indentation opens or closes block collections, and each
        "- " or "? " opens one more. Returns where its content starts, the key's column and the
        last dash's column; None for a line with nothing to scan (blank, comment, a lone `---`)."""
        n = len(line)
        stack = self.stack
        i = n - len(line.lstrip(" "))
        if i == n or line[i] == "#":
            return None
        if i == 0 and line[:3] in ("---", "...") and (n == 3 or line[3] in " \t"):
            stack.clear()
            i = 3
            while i < n and line[i] in " \t":
                i += 1
            if i == n:
                return None
        while stack and stack[-1] > i:
            stack.pop()
        if not stack or stack[-1] < i:
            stack.append(i)
        dash_col = i
        while i < n and line[i] in "-?" and (i + 1 == n or line[i + 1] in " \t"):  # "- - x", "- key: v"
            dash_col = i
            i += 1
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] != "#":
                stack.append(i)
            self.values += 1
        self.values += 1
        if len(stack) > self.limit:
            raise _too_deep(self.path, number, self.limit)
        return i, i, dash_col

    def _scan(self, number: int, line: str, i: int, key_col: int, dash_col: int) -> None:
        """The rest of the line from `i`: flow brackets and entries, quoted scalars, comments, the
        header of a block scalar, tags, anchors and aliases."""
        n = len(line)
        start = True  # a bracket or quote here begins a collection or a quoted scalar
        after_key = False
        quote_end = -1  # where the last quoted scalar on this line ended
        while i < n:
            if self.quote:
                match = (_SINGLE_END if self.quote == "'" else _DOUBLE_END).match(line, i)
                if match is None:
                    return  # the quoted scalar goes on on the next line
                self.quote = ""
                start = False
                i = quote_end = match.end()
                continue
            match = _SPECIAL.search(line, i)
            end = match.start() if match else n
            if end > i and line[i:end].strip():
                start = False
            if match is None:
                return
            char = line[end]
            i = end + 1
            if char == "#":
                if end == 0 or line[end - 1] in " \t":
                    return  # a comment
                start = False
            elif char in "[{":
                start = self._open_flow(number, start)
            elif char in "]}":
                if self.flow:
                    self.flow -= 1
                start = False
            elif char == ",":
                start = self.flow > 0
                self.values += start
            elif char == ":":  # a value follows ": ", or ":" right after a quoted key in flow ({"a":"b"})
                start = i == n or line[i] in " \t" or (self.flow > 0 and end == quote_end)
                after_key = after_key or (start and not self.flow)
                self.values += start and not self.flow  # a block key and its value
            elif char in "'\"":
                if start:
                    self.quote = char
                else:
                    start = False
            elif char in "|>":
                if start and not self.flow and _BLOCK_HEADER.match(line, i):
                    self.owner = key_col if after_key else dash_col
                    return
                start = False
            else:  # ! & *: a tag, anchor or alias; a value may follow it
                i = _end_of_property(line, i)

    def _open_flow(self, number: int, start: bool) -> bool:
        """A [ or {: a flow collection where one may begin (returns True: an entry may follow), else plain text."""
        if not (self.flow or start):
            return False  # plain text such as "see [1]"
        self.flow += 1
        self.values += 1
        if len(self.stack) + self.flow > self.limit:
            raise _too_deep(self.path, number, self.limit)
        return True


def _end_of_property(line: str, i: int) -> int:
    """Where the tag, anchor or alias name starting at `i` ends (the pattern also matches an empty name)."""
    match = _PROPERTY.match(line, i)
    return match.end() if match else i


class _TooDeep(Exception):
    """Raised by the guarded scanner; turned into a located MidtrainError."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


@functools.lru_cache(maxsize=1)
def _guarded_scanner() -> type[Scanner]:
    """ruamel's scanner with a hard bound on nesting (a backstop behind check_nesting)."""
    from ruamel.yaml.scanner import Scanner

    class GuardedScanner(Scanner):
        def fetch_flow_collection_start(self, *args: Any, **kwargs: Any) -> None:
            if len(self.flow_context) >= MAX_DEPTH:
                raise _TooDeep(self.reader.line + 1)
            super().fetch_flow_collection_start(*args, **kwargs)

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= 2 * MAX_DEPTH:
                raise _TooDeep(self.reader.line + 1)
            return bool(super().add_indent(column))

    return GuardedScanner


def _yaml() -> YAML:
    """A pure-Python safe loader: it only composes nodes; values are built by `_Builder`."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _guarded_scanner()
    return yaml


def _yaml_error(path: Path, exc: Exception) -> MidtrainError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    name = type(exc).__name__
    if "DuplicateKey" in name:
        message = f"duplicate key: {problem}"
    elif "\\t" in str(problem) or "'\\t'" in str(problem):
        message = "tab character: YAML indentation must use spaces"
    else:
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return MidtrainError.single(message, file=path, line=line)


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, LineMap]:
    """Parse `path` safely. Returns plain data and where each field was written.

    Every step is linear in the size of the text: the size cap, the nesting pre-pass, one YAML
    parse into nodes, one walk over the nodes (tags checked, aliases expanded within a budget).
    """
    from ruamel.yaml.error import YAMLError

    if text is None:
        text = read_text(path)
    if len(text) > MAX_FILE_BYTES:
        raise _too_large(path, f"{len(text.encode('utf-8', 'replace')) // 1024} KiB")
    if "\t" in text:
        # Tabs are legal inside quoted strings but never in indentation; find the first indentation tab.
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.lstrip(" ")
            if stripped.startswith("\t"):
                raise MidtrainError.single(
                    "tab character in indentation: YAML indentation must use spaces",
                    file=path,
                    line=number,
                    expected="spaces",
                    found="a tab",
                )
    check_nesting(path, text)
    yaml = _yaml()
    try:
        node = yaml.compose(text)
    except _TooDeep as exc:
        raise _too_deep(path, exc.line) from None
    except YAMLError as exc:
        raise _yaml_error(path, exc) from None
    except RecursionError:
        raise _too_deep(path, None) from None
    lines = LineMap()
    if node is None:  # only comments or document markers
        return None, lines
    builder = _Builder(path, lines, yaml.constructor)
    builder.check_tags(node)
    data = builder.build(node, ())
    if isinstance(data, dict):
        lines.lines.setdefault((), 1)
    return data, lines


_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"


def _tag_of(node: Node) -> str:
    tag = str(getattr(node.tag, "value", node.tag))
    return _TAG + tag[2:] if tag.startswith("!!") else tag


class _Builder:
    """Nodes -> plain Python (dict, list, str, int, float, bool, None) and the line of every field."""

    def __init__(self, path: Path, lines: LineMap, constructor: SafeConstructor):
        self.path = path
        self.lines = lines
        self.constructor = constructor
        self.budget = MAX_NODES
        self.open: set[int] = set()  # nodes being built (an alias to one of them is a cycle)

    def error(
        self,
        message: str,
        node: Node,
        *,
        path: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> MidtrainError:
        line = node.start_mark.line + 1
        return MidtrainError.single(message, file=self.path, line=line, path=path, expected=expected, found=found)

    def check_tags(self, root: Node) -> None:
        """Reject non-standard tags (e.g. !!python/object) anywhere, before any value is built."""
        seen: set[int] = set()
        todo = [root]
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            tag = _tag_of(node)
            if tag not in _STANDARD_TAGS and tag != _MERGE:
                raise self.error(
                    "unsupported YAML tag: recipes are data and may only use plain YAML values",
                    node,
                    expected="no tag, or a standard tag such as !!str",
                    found=tag,
                )
            if isinstance(node.value, list):
                for item in node.value:
                    todo.extend(item if isinstance(item, tuple) else (item,))

    def build(self, node: Node, here: PathKey) -> Any:
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        self.budget -= 1
        if self.budget < 0:
            raise MidtrainError.single(
                "YAML expands to too many values (alias bomb?)",
                file=self.path,
                expected=f"at most {MAX_NODES} values after expanding aliases",
                found="more",
            )
        tag = _tag_of(node)
        if isinstance(node, (MappingNode, SequenceNode)):
            if id(node) in self.open:
                raise self.error("an alias refers to a list or mapping that contains it (a cycle)", node)
            self.open.add(id(node))
            try:
                if isinstance(node, MappingNode):
                    if tag != _TAG + "map":
                        raise self.error(f"tag !!{tag.rsplit(':', 1)[-1]} does not fit a mapping", node)
                    return self.mapping(node.value, here)
                if tag == _TAG + "omap":
                    return self.mapping(self.omap_pairs(node), here)
                if tag != _TAG + "seq":
                    raise self.error(f"tag !!{tag.rsplit(':', 1)[-1]} does not fit a list", node)
                items = []
                for index, item in enumerate(node.value):
                    child = (*here, index)
                    self.lines.lines[child] = item.start_mark.line + 1
                    items.append(self.build(item, child))
                return items
            finally:
                self.open.discard(id(node))
        return self.scalar(node, tag, here)

    def omap_pairs(self, node: Node) -> list[tuple[Node, Node]]:
        from ruamel.yaml.nodes import MappingNode

        pairs = []
        for item in node.value:
            if not isinstance(item, MappingNode) or len(item.value) != 1:
                raise self.error("!!omap items must be mappings with one key", item)
            pairs.append(item.value[0])
        return pairs

    def mapping(self, pairs: list[tuple[Node, Node]], here: PathKey) -> dict[str, Any]:
        from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

        out: dict[str, Any] = {}
        merged: list[tuple[Node, Node]] = []  # `<<: *defaults` pairs; keys written here win
        for key_node, value_node in pairs:
            if _tag_of(key_node) == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise self.error("a merge key (<<) needs a mapping or a list of mappings", source)
                    merged.extend(source.value)
                continue
            key = self.key(key_node)
            child = (*here, key)
            if key in out:
                raise self.error(
                    f"duplicate key {key!r} (first written on line {self.lines.lines.get(child)})", key_node
                )
            self.lines.lines[child] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, child)
        for key_node, value_node in merged:
            if not isinstance(key_node, ScalarNode) or _tag_of(key_node) == _MERGE:
                continue
            key = self.key(key_node)
            if key not in out:
                child = (*here, key)
                self.lines.lines[child] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, child)
        return out

    def key(self, node: Node) -> str:
        from ruamel.yaml.nodes import ScalarNode

        key = self.scalar(node, _tag_of(node), None) if isinstance(node, ScalarNode) else None
        if key is None or not isinstance(key, (str, int, float, bool)):
            raise self.error("mapping keys must be plain scalars", node, found=short(getattr(node, "value", node)))
        return str(key)

    def scalar(self, node: Node, tag: str, here: PathKey | None) -> Any:
        from ruamel.yaml.nodes import ScalarNode

        kind = tag.rsplit(":", 1)[-1]
        if not isinstance(node, ScalarNode):
            raise self.error(f"tag !!{kind} does not fit a list or mapping", node)
        if kind == "str" or (kind == "merge" and here is not None):  # `a: <<` is just text
            return str(node.value)
        build = {
            "null": self.constructor.construct_yaml_null,
            "bool": self.constructor.construct_yaml_bool,
            "int": self.constructor.construct_yaml_int,
            "float": self.constructor.construct_yaml_float,
            "timestamp": self.constructor.construct_yaml_timestamp,
        }.get(kind)
        try:
            value = build(node) if build is not None else None
        except Exception:
            build = None
        if build is None:
            raise self.error(
                f"value cannot be read as !!{kind} (its tag, written or implied)",
                node,
                path=format_path(here) if here else None,
                found=short(node.value),
            )
        if isinstance(value, (_dt.date, _dt.datetime)):
            return value.isoformat()[:10]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        raise self.error("unsupported YAML value", node, found=short(value))


def dump_yaml(data: Any) -> str:
    """Plain data -> block-style YAML text (used by `show --yaml` and `cp`)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    # ruamel annotates this attribute with its default (None, "sort"); the representer takes a bool.
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 100
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def located_problem(
    path: Sequence[str | int],
    message: str,
    file: Path | None,
    lines: LineMap,
    data: Any = None,
    expected: str | None = None,
    found: str | None = None,
) -> Problem:
    """A problem at a data path: its line from the index path, its path written with names."""
    return Problem(
        message,
        file=file,
        line=lines.line_for(path),
        path=format_path(path, data) or None,
        expected=expected,
        found=found,
    )


def problems_from_validation(
    exc: ValidationError,
    file: Path | None,
    lines: LineMap,
    prefix: tuple[str | int, ...] = (),
    *,
    data: Any,
    model: Any,
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems (all of them, not just the first).

    `model` is the annotation validated (a model class or e.g. `dict[str, DataSource]`) and `data`
    what was validated: paths name list items, union labels are told from keys, unknown fields get
    "did you mean" and the fields allowed there (midtrain/schema/locate.py)."""
    from midtrain.schema.locate import locate_errors

    return [
        located_problem((*prefix, *item.path), item.message, file, lines, data, item.expected, item.found)
        for item in locate_errors(exc.errors(include_url=False), data, model)
    ]
