"""Tag requests (API 1.1 and later): GET/POST tags, GET/PUT/DELETE tags/{tag}.

Pages 222773 (GET tags), 222772 (POST tags: "Only one tag object must be
specified", name 1 to 128 of ``[A-Za-z0-9_-]``, "You cannot use the name of an
existing tag", stored uppercase, weight mandatory 0 to 5), 222775 (GET
tags/{tag}: "Tag doesn't exist"), 222791 (PUT tags/{tag}: both properties
optional) and 222809 (DELETE tags/{tag}).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from feedsync.emulator.model import Refusal, integer, known_fields, required, single

if TYPE_CHECKING:
    from feedsync.emulator.api import Answer, Api
    from feedsync.emulator.routes import Resolved

_TAG_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FIELDS = ("name", "weight")


def answer(api: Api, request: Resolved, body: list[Any] | None) -> Answer:
    match request.endpoint.resource, request.endpoint.method:
        case "tags", "GET":
            return 200, [{"name": n, "weight": w} for n, w in sorted(api.tags.items())]
        case "tags", "POST":
            return _create(api, required(body))
        case "tag", "GET":
            name = _existing(api, request.name)
            return 200, [{"name": name, "weight": api.tags[name]}]
        case "tag", "PUT":
            return _update(api, _existing(api, request.name), required(body))
        case "tag", "DELETE":
            remove(api, _existing(api, request.name))
            return 200, [{"status": "Tag successfully deleted"}]
    raise AssertionError(f"no tag handler for {request.endpoint}")


def remove(api: Api, name: str) -> None:
    """Delete the tag and take it off every indicator: no indicator keeps a tag
    the database no longer has (the tag pages are silent on this)."""
    api.tags.pop(name.upper(), None)
    _rename_on_indicators(api, name.upper(), None)


def _create(api: Api, body: list[Any]) -> Answer:
    item = single(body, "tag")
    known_fields(item, _FIELDS, api.readings.unknown_fields == "refuse")
    name = _name(item.get("name"))
    if name in api.tags:
        raise Refusal(400, f"Tag {name} already exists")
    api.tags[name] = integer(item.get("weight"), 0, 5, "tag weight")
    return 201, [{"status": "Tag successfully created"}]


def _update(api: Api, current: str, body: list[Any]) -> Answer:
    item = single(body, "tag")
    known_fields(item, _FIELDS, api.readings.unknown_fields == "refuse")
    name = _name(item["name"]) if "name" in item else current
    if name != current and name in api.tags:
        raise Refusal(400, f"Tag {name} already exists")
    weight = integer(item.get("weight", api.tags[current]), 0, 5, "tag weight")
    # Changed in place: tests hold the emulator's tag dict itself.
    del api.tags[current]
    api.tags[name] = weight
    if name != current:
        _rename_on_indicators(api, current, name)
    return 200, [{"status": "Tag successfully updated"}]


def _existing(api: Api, name: str) -> str:
    if name.upper() not in api.tags:
        raise Refusal(api.readings.missing_tag_status, "Tag doesn't exist")
    return name.upper()


def _name(value: object) -> str:
    if not isinstance(value, str) or not _TAG_NAME.fullmatch(value):
        raise Refusal(400, f"Invalid tag name {value!r}")
    return value.upper()


def _rename_on_indicators(api: Api, old: str, new: str | None) -> None:
    for supplier in api.suppliers.values():
        for indicator in supplier.indicators.values():
            if old in indicator.tags:
                indicator.tags.discard(old)
                if new is not None:
                    indicator.tags.add(new)
