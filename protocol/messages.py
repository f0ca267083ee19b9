"""Version-agnostic construction of kio request/response entities.

kio generates one module per API version, with the same class names but
different fields. Handlers build responses through a MessageBuilder for the
request's version, passing the newest field names; fields the version does
not have are dropped, so one handler body serves every version.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from types import ModuleType
from typing import Any

from kio.index import load_payload_module
from kio.static.constants import EntityType

from lodestream.protocol import lodestream_apis


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def has_field(entity_or_cls: Any, name: str) -> bool:
    cls = entity_or_cls if isinstance(entity_or_cls, type) else type(entity_or_cls)
    return name in _field_names(cls)


class MessageBuilder:
    """`MessageBuilder(3, 12).MetadataResponseTopic(name=..., topic_id=...)`."""

    def __init__(self, api_key: int, version: int, entity_type: EntityType = EntityType.response) -> None:
        self.version = version
        self._module: ModuleType = lodestream_apis.MODULE if api_key in lodestream_apis.SCHEMAS \
            else load_payload_module(api_key, version, entity_type)

    def has(self, class_name: str) -> bool:
        return hasattr(self._module, class_name)

    def __getattr__(self, class_name: str):
        cls = getattr(self._module, class_name)
        names = _field_names(cls)

        def build(**kwargs: Any) -> Any:
            if names.issuperset(kwargs):  # the common case: every field is in this version
                return cls(**kwargs)
            return cls(**{k: v for k, v in kwargs.items() if k in names})

        build.__name__ = class_name
        setattr(self, class_name, build)  # later lookups find it without __getattr__ (builders are cached)
        return build


@cache
def response_builder(api_key: int, version: int) -> MessageBuilder:
    return MessageBuilder(api_key, version, EntityType.response)


@cache
def request_builder(api_key: int, version: int) -> MessageBuilder:
    return MessageBuilder(api_key, version, EntityType.request)
