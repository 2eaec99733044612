"""Reading YAML safely: every YAML text grar reads (params files, ``--set`` values, run folders' ``config.yaml``,
the paper's transcribed tables) goes through here, so that a hostile or broken file is one ``ConfigError``
line naming the file and the line, never a traceback or an out-of-memory kill.

``read_yaml`` reads a file (size limit, UTF-8, a mapping at the top); ``parse_yaml`` parses a text with
``BoundedLoader`` (safe types, unique keys, the ``YAML_MAX_*`` limits counted as nodes are composed);
``parse_generated_yaml`` is the fast path for files grar wrote itself (libyaml's C parser, the same limits
checked on the event stream). What the values mean is ``pipeline.config``'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

# Limits of every YAML text grar reads (params files, --set values, run folders' config.yaml), so that a hostile
# or broken file is one error line, never an out-of-memory kill: the params files are ~500 nodes, 7 levels deep.
YAML_MAX_BYTES = 1 << 20  # a params file's size
YAML_MAX_NODES = 100_000  # scalars, lists and mappings, counted with every alias expanded (where memory goes)
YAML_MAX_DEPTH = 64  # nesting of lists and mappings (the composer recurses per level)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning every failure into a ``ConfigError`` naming the file."""
    try:
        size = path.stat().st_size
        if size > YAML_MAX_BYTES and path.is_file():
            raise ConfigError(f"{path}: {size:,} bytes; a parameters file may hold at most {YAML_MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a parameters file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x})") from None
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed by ``BoundedLoader`` (safe types, unique keys, the ``YAML_*`` limits); every failure is a
    ``ConfigError`` naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except (DuplicateKeyError, YAMLLimitError) as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None


def parse_generated_yaml(text: str, source: str) -> Any:
    """A YAML text grar wrote (a run folder's ``config.yaml``), parsed by libyaml's C parser within the same
    ``YAML_*`` limits as ``parse_yaml`` (checked on the event stream first, in one pass, so that a tampered
    file is one error), without its duplicate-key check: ~20 times faster, for ``grar grid plan`` reading
    thousands of run folders. ``parse_yaml`` where PyYAML was built without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return parse_yaml(text, source)
    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; at most {YAML_MAX_BYTES:,}")
    try:
        check_yaml_events(yaml.parse(text, Loader=yaml.CSafeLoader))
        return yaml.load(text, Loader=yaml.CSafeLoader)
    except YAMLLimitError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None


def check_yaml_events(events: Any) -> None:
    """``YAMLLimitError`` when a YAML event stream nests deeper than ``YAML_MAX_DEPTH``, expands (aliases
    counted as the node they repeat) to more than ``YAML_MAX_NODES`` values, or holds a recursive alias."""
    sizes: dict[str, int] = {}  # anchor -> expanded size of its complete node
    open_nodes: list[list[Any]] = []  # [expanded size so far, anchor] of each collection being read
    total = 0
    for event in events:
        if isinstance(event, yaml.CollectionEndEvent):
            size, anchor = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
            if open_nodes:
                open_nodes[-1][0] += size
            continue
        line = event.start_mark.line + 1
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= YAML_MAX_DEPTH:
                raise YAMLLimitError(f"line {line}: nested deeper than {YAML_MAX_DEPTH} levels")
            open_nodes.append([1, event.anchor])
            added = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise YAMLLimitError(f"line {line}: alias *{event.anchor} names no complete node before it")
            added = sizes[event.anchor]
            if open_nodes:
                open_nodes[-1][0] += added
        elif isinstance(event, yaml.ScalarEvent):
            added = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
            if open_nodes:
                open_nodes[-1][0] += 1
        else:
            continue
        total += added
        if total > YAML_MAX_NODES:
            raise YAMLLimitError(
                f"line {line}: more than {YAML_MAX_NODES:,} values with aliases expanded (an alias bomb?); "
                "write the values out, or use fewer aliases"
            )


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice (YAML would silently keep the last)."""


class YAMLLimitError(yaml.YAMLError):
    """A YAML text beyond ``YAML_MAX_NODES`` (aliases expanded) or ``YAML_MAX_DEPTH``; the message names the line."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, naming it and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(f"line {line}: duplicate key {key!r} (first on line {seen[key]})")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class BoundedLoader(UniqueKeyLoader):
    """``UniqueKeyLoader`` that counts the nodes of the document as they are composed, every alias (``*name``,
    and the ``<<`` merges built on them) counted as the whole node it repeats, and refuses more than
    ``YAML_MAX_NODES`` or a nesting deeper than ``YAML_MAX_DEPTH`` before anything is built.

    PyYAML builds an alias as a shared reference, so "nine levels of nine aliases" (the billion laughs) costs
    nothing to load, and 9^9 nodes to everything that walks the tree afterwards (validation, ``grar config``
    printing it). Counting is exact and linear in the text: each node's expanded size is stored once. An
    alias to a node that contains it (a recursive structure) is refused too: no params value is one.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded, once it is complete

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._nodes += nodes
        if self._nodes > YAML_MAX_NODES:
            raise YAMLLimitError(
                f"line {mark.line + 1}: more than {YAML_MAX_NODES:,} values with aliases expanded "
                "(an alias bomb?); write the values out, or use fewer aliases"
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise YAMLLimitError(
                        f"line {event.start_mark.line + 1}: alias *{event.anchor} inside the node it names "
                        "(a recursive structure)"
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > YAML_MAX_DEPTH:
            raise YAMLLimitError(f"line {event.start_mark.line + 1}: nested deeper than {YAML_MAX_DEPTH} levels")
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, event.start_mark)
        self._sizes[id(node)] = self._nodes - before
        return node
