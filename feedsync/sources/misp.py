"""MISP attributes to records: the type mapping and context both MISP sources share.

The ``misp`` (REST API) and ``misp_feed`` (feed directory) sources read the same
attributes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from feedsync.model import Invalid, Record, Removal

# Which part of a MISP value is the indicator: 0 for plain types, the index of
# the part for composites ("filename|md5" -> the hash, "ip-dst|port" -> the IP).
PARTS: Mapping[str, int] = {
    "md5": 0,
    "sha1": 0,
    "sha256": 0,
    "ip-src": 0,
    "ip-dst": 0,
    "domain": 0,
    "hostname": 0,
    "url": 0,
    "filename|md5": 1,
    "filename|sha1": 1,
    "filename|sha256": 1,
    "ip-src|port": 0,
    "ip-dst|port": 0,
    "hostname|port": 0,
    "domain|ip": 0,
}


def event_records(
    event: Mapping[str, Any], *, line: int = 0
) -> Iterator[Record | Invalid | Removal]:
    """The records of one MISP event (``{"Event": {...}}`` or the bare event).

    Takes ``to_ids`` attributes that are not deleted, including those inside
    objects; a ``to_ids`` attribute of a type feedsync cannot map is Invalid
    ("unsupported_type"). Keys are attribute uuids: MISP can reuse a value. An
    attribute not for detection is a Removal saying why (soft-deleted, ``to_ids``
    off): in a full snapshot only the change journal reads it.
    """
    body = event.get("Event", event)
    if not isinstance(body, Mapping):
        return
    event_tags = _tag_names(body.get("Tag"))
    context = _event_context(body)
    attributes = _listed(body, "Attribute")
    objects = _listed(body, "Object")
    if attributes is None or objects is None:
        yield Invalid(
            line, str(body.get("uuid") or body.get("info") or "")[:200], "malformed_event"
        )
        return
    for obj in objects:
        if isinstance(obj, Mapping) and not _true(obj.get("deleted")):
            inner = _listed(obj, "Attribute")
            if inner is None:
                yield Invalid(line, str(obj.get("uuid") or "")[:200], "malformed_object")
                continue
            attributes.extend(inner)
    for attribute in attributes:
        if isinstance(attribute, Mapping):
            record = attribute_record(attribute, context, event_tags, line)
            if record is not None:
                yield record
            elif (why := not_for_detection(attribute)) and attribute.get("uuid"):
                yield Removal(str(attribute["uuid"]), line, reason=why)


def not_for_detection(attribute: Mapping[str, Any]) -> str | None:
    """Why MISP says an attribute is not for detection, or None."""
    if _true(attribute.get("deleted")):
        return "soft-deleted in MISP"
    if not _true(attribute.get("to_ids")):
        return "to_ids is off in MISP"
    return None


def attribute_record(
    attribute: Mapping[str, Any],
    event_context: tuple[tuple[str, str], ...],
    event_tags: tuple[str, ...],
    line: int = 0,
) -> Record | Invalid | None:
    """One attribute as a record; None when it is not for detection."""
    if not _true(attribute.get("to_ids")) or _true(attribute.get("deleted")):
        return None
    kind = str(attribute.get("type", ""))
    value = str(attribute.get("value", ""))
    part = PARTS.get(kind)
    if part is None:
        return Invalid(line, f"{kind}: {value}"[:200], "unsupported_type")
    pieces = value.split("|")
    if len(pieces) <= part:
        return Invalid(line, value[:200], "composite")
    context = [("category", str(attribute.get("category", ""))), ("type", kind)]
    comment = str(attribute.get("comment") or "").strip()
    if comment:
        context.append(("comment", comment))
    return Record(
        line=line,
        value=pieces[part],
        context=tuple((k, v) for k, v in context if v) + event_context,
        tags=_tag_names(attribute.get("Tag")) + event_tags,
        key=str(attribute.get("uuid") or f"{kind}:{value}"),
    )


def _listed(holder: Mapping[str, Any], key: str) -> list[Any] | None:
    """``holder[key]`` as a list (absent or null: empty); None when it is something else."""
    value = holder.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else None


def _event_context(event: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs = (
        ("event_id", event.get("id")),
        ("event_uuid", event.get("uuid")),
        ("event_info", event.get("info")),
    )
    return tuple((k, str(v)) for k, v in pairs if v not in (None, ""))


def _tag_names(tags: object) -> tuple[str, ...]:
    if not isinstance(tags, list):
        return ()
    return tuple(str(t["name"]) for t in tags if isinstance(t, Mapping) and t.get("name"))


def _true(value: object) -> bool:
    # MISP speaks booleans, 0/1 and "0"/"1" depending on version and endpoint.
    return value is True or value in (1, "1", "true", "True")
