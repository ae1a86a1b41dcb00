"""Safe, located YAML reading.

Recipes and registry files are data, never code: only the standard YAML tags are accepted, aliases
cannot expand without bound, and every value keeps the line it came from so that later validation
errors can point at it. The result is plain Python (dict, list, str, int, float, bool, None) plus a
`LineMap` from field paths to 1-based line numbers.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError, Problem, short

MAX_FILE_BYTES = 2 * 1024 * 1024  # a recipe is a few KiB; anything this big is a mistake
MAX_NODES = 200_000  # after alias expansion; guards against "billion laughs"

_STANDARD_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "omap")
}

PathKey = tuple[str | int, ...]


@dataclass
class LineMap:
    """Field path -> 1-based line of the key (mappings) or item (sequences) that holds it."""

    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_for(self, path: tuple[Any, ...]) -> int | None:
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
    def from_json(cls, rows: list[list[Any]]) -> "LineMap":
        return cls({tuple(k): v for k, v in rows})


def format_path(path: tuple[Any, ...]) -> str:
    """("stages", 0, "schedule") -> "stages[0].schedule"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def read_text(path: Path) -> str:
    """Read a small UTF-8 text file, or raise a MidtrainError that says what is wrong with it."""
    if not path.exists():
        raise MidtrainError.single("file not found", file=path)
    if path.is_dir():
        raise MidtrainError.single(
            "is a directory, expected a YAML file", file=path, expected="a .yaml file", found="a directory"
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MidtrainError.single(
            "file is too large to be a recipe or registry file",
            file=path,
            expected=f"at most {MAX_FILE_BYTES // 1024} KiB",
            found=f"{size // 1024} KiB",
        )
    data = path.read_bytes()
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


def _check_events(path: Path, text: str) -> None:
    """Reject non-standard tags (e.g. !!python/object) before anything is constructed."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    for event in yaml.parse(text):
        tag = getattr(event, "tag", None)
        if tag is None:
            continue
        tag = str(getattr(tag, "value", tag))
        if tag in ("!", "?"):
            continue
        if tag.startswith("!!"):
            tag = "tag:yaml.org,2002:" + tag[2:]
        if tag not in _STANDARD_TAGS:
            line = event.start_mark.line + 1 if event.start_mark else None
            raise MidtrainError.single(
                "unsupported YAML tag: recipes are data and may only use plain YAML values",
                file=path,
                line=line,
                expected="no tag, or a standard tag such as !!str",
                found=tag,
            )


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, LineMap]:
    """Parse `path` safely. Returns plain data and where each field was written."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if text is None:
        text = read_text(path)
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
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        _check_events(path, text)
        raw = yaml.load(text)
    except MidtrainError:
        raise
    except YAMLError as exc:
        raise _yaml_error(path, exc) from None
    except RecursionError:
        raise MidtrainError.single("YAML nesting is too deep", file=path) from None
    lines = LineMap()
    budget = [MAX_NODES]
    data = _to_plain(raw, (), lines, budget, path)
    return data, lines


def _to_plain(node: Any, here: PathKey, lines: LineMap, budget: list[int], path: Path) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    budget[0] -= 1
    if budget[0] < 0:
        raise MidtrainError.single(
            "YAML expands to too many values (alias bomb?)",
            file=path,
            expected=f"at most {MAX_NODES} values after expanding aliases",
            found="more",
        )
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            if not isinstance(key, (str, int, float, bool)) or key is None:
                line = node.lc.key(key)[0] + 1 if hasattr(node, "lc") else None
                raise MidtrainError.single(
                    "mapping keys must be plain scalars", file=path, line=line, found=short(key)
                )
            child_path = here + (str(key),)
            try:
                lines.lines[child_path] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            out[str(key)] = _to_plain(node[key], child_path, lines, budget, path)
        if here == () and not lines.lines.get(()):
            lines.lines[()] = 1
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            child_path = here + (index,)
            try:
                lines.lines[child_path] = node.lc.item(index)[0] + 1
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            items.append(_to_plain(item, child_path, lines, budget, path))
        return items
    if type(node).__name__ == "TaggedScalar":
        return _tagged(node, here, lines, path)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (_dt.date, _dt.datetime)):
        return node.isoformat()[:10]
    raise MidtrainError.single(
        "unsupported YAML value", file=path, line=lines.line_for(here), path=format_path(here), found=short(node)
    )


def _tagged(node: Any, here: PathKey, lines: LineMap, path: Path) -> Any:
    """A scalar with an explicit standard tag (!!str, !!int, !!float, !!bool, !!null)."""
    tag = str(getattr(node.tag, "value", node.tag)).rsplit(":", 1)[-1].lstrip("!")
    text = node.value
    try:
        if tag == "str":
            return str(text)
        if tag == "int":
            return int(text)
        if tag == "float":
            return float(text)
        if tag == "bool" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if tag == "null":
            return None
    except ValueError:
        pass
    raise MidtrainError.single(
        f"value does not match its tag !!{tag}", file=path, line=lines.line_for(here), path=format_path(here), found=short(text)
    )


def dump_yaml(data: Any) -> str:
    """Plain data -> block-style YAML text (used by `show --yaml` and `cp`)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    yaml.width = 100
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def problems_from_validation(exc: Any, file: Path | None, lines: LineMap, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems (all of them, not just the first)."""
    from midtrain.errors import LocatedErrors

    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(prefix) + tuple(err.get("loc", ()))
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedErrors):
            for sub_path, sub_message in located.items:
                full = loc + tuple(sub_path)
                problems.append(Problem(sub_message, file=file, line=lines.line_for(full), path=format_path(full)))
            continue
        # Discriminated-union tags and function-validator names are not fields in the file.
        shown = tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part.startswith("function-"))))
        kind = err.get("type", "")
        message = err.get("msg", "invalid value")
        expected = None
        found = None
        if "input" in err and kind != "missing":
            found = short(err["input"])
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = "unknown field"
            found = str(shown[-1]) if shown else None
            expected = "one of the fields documented in `midtrain schema`"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            expected = message.replace("Input should be ", "")
            message = "wrong type"
        elif kind in ("literal_error", "enum", "union_tag_invalid"):
            expected = message.replace("Input should be ", "").replace("Input tag ", "tag ")
            message = "not an allowed value"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(
            Problem(message, file=file, line=lines.line_for(shown), path=format_path(shown) or None, expected=expected, found=found)
        )
    return problems
