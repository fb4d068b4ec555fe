"""Round-trip YAML (ruamel.yaml) for the files the tools edit: comments, quotes, order and layout kept.

The one difference from ruamel's defaults: `None` is written `null`, as PyYAML and the data files write it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.representer import RoundTripRepresenter

COMMENT_COLUMN = 33  # where a trailing `# comment` starts in the data files


class _Representer(RoundTripRepresenter):
    """ruamel's round-trip representer, writing None as `null`."""


_Representer.add_representer(
    type(None), lambda r, _data: r.represent_scalar("tag:yaml.org,2002:null", "null")
)


def round_trip() -> YAML:
    """A YAML instance that loads to comment-keeping maps and lists and dumps them back byte for byte."""
    yaml = YAML()
    yaml.Representer = _Representer
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def load(text: str) -> Any:
    return round_trip().load(text)


def dump(document: Any) -> str:
    buffer = io.StringIO()
    round_trip().dump(document, buffer)
    return buffer.getvalue()


def update(document: CommentedMap, data: Mapping[str, Any]) -> CommentedMap:
    """`data` in `document`'s place, keeping the comments of every key that stays (key order: `data`'s)."""
    updated = CommentedMap()
    for key, value in data.items():
        old = document.get(key)
        nested = isinstance(value, Mapping) and isinstance(old, CommentedMap)
        updated[key] = update(old, value) if nested else value
        if key in document.ca.items:
            updated.ca.items[key] = document.ca.items[key]
    updated.ca.comment = document.ca.comment  # the comment lines above the first key
    return updated
