"""Each rule of docs/emulator.md's conformance table, and each reading of each switch.

Every test here is named in that table; test_the_conformance_table_names_real_tests
fails when a row names no test or one that does not exist.
"""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock
from test_emulator import (
    JSON,
    MD5,
    PASSWORD,
    SUPPLIERS,
    USER,
    call,
    code,
    delete,
    error,
    put,
    reasons,
    started,
)

from feedsync.emulator import EmulatedIndicator, Emulator
from feedsync.emulator.readings import Readings

ROOT = Path(__file__).resolve().parents[2]
TAGS = "/api/1.2/tags"
OK_SUPPLIER = {"name": "S", "confidence": 50, "retention": 60}


@pytest.fixture
async def mt(clock: Clock) -> AsyncIterator[Emulator]:
    """Multitenancy mode with the tenants acme and other."""
    emulator = Emulator(user=USER, password=PASSWORD, clock=clock, tenants=("acme", "other"))
    await emulator.start()
    yield emulator
    await emulator.stop()


async def with_reading(**reading: Any) -> Emulator:
    return await started(**reading)


# Requests per API version and tenant (198593)


async def test_tags_need_api_1_1(emu: Emulator) -> None:
    for method, path in (("GET", "/api/1.0/tags"), ("POST", "/api/1.0/tags")):
        assert await code(emu, method, path, [{"name": "a", "weight": 1}]) == 404
    assert await code(emu, "GET", "/api/1.0/tags/X") == 404
    for version in ("1.1", "1.2", "1.3"):
        assert await code(emu, "GET", f"/api/{version}/tags") == 200
    assert emu.tags() == {}


async def test_lookup_under_1_3_needs_a_tenant(mt: Emulator) -> None:
    query = [{"object": "a.example"}]
    for version in ("1.0", "1.1", "1.2"):
        assert await code(mt, "POST", f"/api/{version}/lookup", query) == 200
    assert await code(mt, "POST", "/api/1.3/lookup", query) == 404
    assert await code(mt, "POST", "/api/1.3/acme/lookup", query) == 200


async def test_tenant_forms_are_the_documented_ones(mt: Emulator) -> None:
    mt.add_supplier("S", tenant="acme")
    ok = [
        ("GET", "/api/1.3/acme/suppliers/S", None, 200),
        ("PUT", "/api/1.3/acme/suppliers/S", [{"confidence": 7}], 200),
        ("PUT", "/api/1.3/acme/suppliers/S/indicators", [{"indicator": "a.example"}], 201),
        ("DELETE", "/api/1.3/acme/suppliers/S/indicators", [{"indicator": "a.example"}], 201),
        ("POST", "/api/1.3/acme/lookup", [{"object": "a.example"}], 200),
    ]
    for method, path, body, status in ok:
        assert await code(mt, method, path, body) == status, (method, path)
    missing = [
        ("GET", "/api/1.3/acme/suppliers", None, 404),
        ("POST", "/api/1.3/acme/suppliers", [OK_SUPPLIER], 404),
        ("DELETE", "/api/1.3/acme/suppliers/S", None, 405),
        ("GET", "/api/1.3/acme/tags", None, 404),
        ("POST", "/api/1.3/acme/tags", [{"name": "x", "weight": 1}], 404),
    ]
    for method, path, body, status in missing:
        assert await code(mt, method, path, body) == status, (method, path)
    assert mt.supplier("S") is not None and mt.tags() == {}
    for method, path, body in (
        ("GET", "/api/1.3/suppliers", None),
        ("POST", "/api/1.3/suppliers", [{**OK_SUPPLIER, "name": "T"}]),
        ("DELETE", "/api/1.3/suppliers/T", None),
        ("GET", "/api/1.3/tags", None),
    ):
        assert await code(mt, method, path, body) in (200, 201), (method, path)


async def test_tenant_forms_need_multitenancy_and_1_3(emu: Emulator, mt: Emulator) -> None:
    emu.add_supplier("S")
    assert await code(emu, "GET", "/api/1.3/acme/suppliers/S") == 404, "multitenancy is off"
    assert await code(emu, "GET", "/api/1.3/General/suppliers/S") == 404
    assert await code(emu, "GET", "/api/1.3/suppliers/S") == 200
    mt.add_supplier("S", tenant="acme")
    assert await code(mt, "GET", "/api/1.2/acme/suppliers/S") == 404, "no tenants before 1.3"
    assert await code(mt, "GET", "/api/1.3/evil/suppliers/S") == 404, "no such tenant"
    assert await code(mt, "GET", "/api/1.3/General/suppliers/S") == 200


async def test_untenanted_requests_are_the_general_tenant(mt: Emulator) -> None:
    assert await code(mt, "POST", "/api/1.3/suppliers", [OK_SUPPLIER]) == 201
    await call(mt, "PUT", "/api/1.3/suppliers/S/indicators", [{"indicator": "a.example"}])
    await call(mt, "PUT", "/api/1.3/General/suppliers/S/indicators", [{"indicator": "b.example"}])
    assert mt.indicators("S").keys() == {"a.example", "b.example"}
    _, found = await call(mt, "POST", "/api/1.2/lookup", [{"object": "b.example"}])
    assert found[0]["result"] == "detected", "the untenanted lookup searches General"
    assert mt.supplier("S", tenant="acme") is None


# Suppliers (198637, 198625, 198636, 198644, 198645)


async def test_the_supplier_list(emu: Emulator) -> None:
    assert await call(emu, "GET", SUPPLIERS) == (
        200,
        [
            {"name": "FalsePositive", "status": "enabled"},
            {"name": "InternalTI", "status": "enabled"},
        ],
    )
    emu.add_supplier("S")
    await call(emu, "PUT", f"{SUPPLIERS}/S", [{"status": "disabled"}])
    assert (await call(emu, "GET", SUPPLIERS))[1][-1] == {"name": "S", "status": "disabled"}


async def test_supplier_creation(emu: Emulator) -> None:
    new = {"name": "S-1_x", "confidence": 50, "retention": 10, "vendor": "v"}
    status, body = await call(emu, "POST", SUPPLIERS, [new])
    assert status == 201 and isinstance(body[0]["status"], str)
    assert await call(emu, "GET", f"{SUPPLIERS}/S-1_x") == (200, [{**new, "status": "enabled"}])
    assert (
        await code(emu, "POST", SUPPLIERS, [{"name": "T", "confidence": 0, "retention": 1}]) == 201
    )
    assert (await call(emu, "GET", f"{SUPPLIERS}/T"))[1][0]["vendor"] == ""


async def test_post_suppliers_takes_one_object(emu: Emulator) -> None:
    bad: list[Any]
    for bad in ([], [OK_SUPPLIER, {**OK_SUPPLIER, "name": "V"}], ["S"], [[OK_SUPPLIER]]):
        status, body = await call(emu, "POST", SUPPLIERS, bad)
        assert status == 400 and "one supplier" in error(body)["reason"], bad
    assert emu.supplier("S") is None and emu.supplier("V") is None


async def test_supplier_names(emu: Emulator) -> None:
    for name in ("bad name", "S\n", "", "a.b", "ö", "InternalTI", "FalsePositive", 5, None):
        status, body = await call(emu, "POST", SUPPLIERS, [{**OK_SUPPLIER, "name": name}])
        assert status == 400 and "supplier name" in error(body)["reason"], name
    assert len(emu.api.suppliers) == 2


async def test_supplier_fields(emu: Emulator) -> None:
    for changed in (
        {"confidence": 101},
        {"confidence": -1},
        {"confidence": "5"},
        {"confidence": True},
        {"confidence": 5.0},
        {"retention": -1},
        {"retention": 1.5},
        {"vendor": 3},
    ):
        assert await code(emu, "POST", SUPPLIERS, [{**OK_SUPPLIER, **changed}]) == 400, changed
    for missing in ("confidence", "retention", "name"):
        partial = {k: v for k, v in OK_SUPPLIER.items() if k != missing}
        assert await code(emu, "POST", SUPPLIERS, [partial]) == 400, missing
    assert emu.supplier("S") is None


async def test_a_duplicate_supplier_is_refused(emu: Emulator) -> None:
    assert await code(emu, "POST", SUPPLIERS, [OK_SUPPLIER]) == 201
    status, body = await call(emu, "POST", SUPPLIERS, [{**OK_SUPPLIER, "confidence": 1}])
    assert status == 400 and "already exists" in error(body)["reason"]
    supplier = emu.supplier("S")
    assert supplier is not None and supplier.confidence == 50


async def test_supplier_info(emu: Emulator) -> None:
    _, body = await call(emu, "GET", f"{SUPPLIERS}/InternalTI")
    assert body == [
        {"name": "InternalTI", "status": "enabled", "confidence": 100, "retention": 0, "vendor": ""}
    ]


async def test_supplier_update(emu: Emulator) -> None:
    emu.add_supplier("S", confidence=50, retention=1, vendor="v")
    emu.add_supplier("Other")
    update = {"name": "S", "confidence": 60, "retention": 5, "vendor": "w", "status": "disabled"}
    assert await code(emu, "PUT", f"{SUPPLIERS}/S", [update]) == 200
    assert await call(emu, "GET", f"{SUPPLIERS}/S") == (200, [update])
    bad: list[Any]
    for bad in (
        [{"status": "off"}],
        [{"confidence": 101, "vendor": "x"}],
        [{"retention": -5}],
        [{"name": "a b"}],
        [{"name": "Other"}],
        [{"vendor": []}],
        [{"confidence": 1}, {"confidence": 2}],
        [],
    ):
        assert await code(emu, "PUT", f"{SUPPLIERS}/S", bad) == 400, bad
    assert await call(emu, "GET", f"{SUPPLIERS}/S") == (200, [update]), "refusals change nothing"
    await put(emu, [{"indicator": "a.example"}])
    assert await code(emu, "PUT", f"{SUPPLIERS}/S", [{"name": "Renamed"}]) == 200
    assert emu.supplier("S") is None and emu.indicators("Renamed").keys() == {"a.example"}


async def test_builtin_suppliers_cannot_change(emu: Emulator) -> None:
    for name in ("FalsePositive", "InternalTI"):
        status, body = await call(emu, "PUT", f"{SUPPLIERS}/{name}", [{"confidence": 5}])
        assert status == 400 and "REST API" in error(body)["reason"]
        status, body = await call(emu, "DELETE", f"{SUPPLIERS}/{name}")
        assert (
            status == 400
            and error(body)["status"] == "An error occurred while removing the supplier"
        )
    assert emu.supplier("InternalTI") is not None and emu.supplier("FalsePositive") is not None
    assert emu.api.suppliers["InternalTI"].confidence == 100


async def test_supplier_deletion(emu: Emulator) -> None:
    emu.add_supplier("S")
    await put(emu, [{"indicator": "a.example"}])
    assert await call(emu, "DELETE", f"{SUPPLIERS}/S") == (
        201,
        [{"status": "Supplier successfully removed"}],
    )
    assert await code(emu, "GET", f"{SUPPLIERS}/S") == 400
    emu.add_supplier("S")
    assert emu.indicators("S") == {}, "deleting a supplier deletes its indicators"


# Tags (222772, 222773, 222775, 222791, 222809)


async def test_tags_are_created_uppercase(emu: Emulator) -> None:
    for tag in ({"name": "tlp_white", "weight": 2}, {"name": "Mal-1", "weight": 0}):
        assert await call(emu, "POST", TAGS, [tag]) == (
            201,
            [{"status": "Tag successfully created"}],
        )
    assert await call(emu, "GET", TAGS) == (
        200,
        [{"name": "MAL-1", "weight": 0}, {"name": "TLP_WHITE", "weight": 2}],
    )


async def test_post_tags_takes_one_tag(emu: Emulator) -> None:
    two = [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    bad: list[Any]
    for bad in (two, [], ["a"]):
        status, body = await call(emu, "POST", TAGS, bad)
        assert status == 400 and "one tag" in error(body)["reason"], bad
    assert emu.tags() == {}


async def test_tag_names(emu: Emulator) -> None:
    for name in ("bad tag", "tag\n", "", "x" * 129, "a.b", "ü", 5):
        status, body = await call(emu, "POST", TAGS, [{"name": name, "weight": 1}])
        assert status == 400 and "tag name" in error(body)["reason"], name
    assert await code(emu, "POST", TAGS, [{"name": "x" * 128, "weight": 5}]) == 201
    assert emu.tags() == {"X" * 128: 5}


async def test_an_existing_tag_is_refused(emu: Emulator) -> None:
    assert await code(emu, "POST", TAGS, [{"name": "tlp_white", "weight": 2}]) == 201
    for again in ("TLP_WHITE", "tlp_white", "Tlp_White"):
        status, body = await call(emu, "POST", TAGS, [{"name": again, "weight": 5}])
        assert status == 400 and "already exists" in error(body)["reason"], again
    assert emu.tags() == {"TLP_WHITE": 2}


async def test_tag_weight(emu: Emulator) -> None:
    for weight in (6, -1, "1", 1.0, True, None):
        assert await code(emu, "POST", TAGS, [{"name": "x", "weight": weight}]) == 400, weight
    assert await code(emu, "POST", TAGS, [{"name": "x"}]) == 400, "the weight is mandatory"
    assert emu.tags() == {}


async def test_tag_info(emu: Emulator) -> None:
    emu.add_tag("WIN-TROJAN", 5)
    assert await call(emu, "GET", f"{TAGS}/WIN-TROJAN") == (
        200,
        [{"name": "WIN-TROJAN", "weight": 5}],
    )
    assert (await call(emu, "GET", f"{TAGS}/win-trojan"))[0] == 200, "names are uppercase"
    status, body = await call(emu, "GET", f"{TAGS}/NOPE")
    assert status == 400 and error(body) == {
        "status": "An error occurred while getting tag info",
        "reason": "Tag doesn't exist",
    }


async def test_tag_update(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("WIN-TROJAN", 5)
    emu.add_tag("OTHER", 1)
    await put(emu, [{"indicator": "a.example", "tags": ["WIN-TROJAN"]}])
    assert await code(emu, "PUT", f"{TAGS}/WIN-TROJAN", [{"name": "trojan", "weight": 4}]) == 200
    assert emu.tags() == {"TROJAN": 4, "OTHER": 1}
    assert emu.indicators("S")["a.example"].tags == {"TROJAN"}
    assert await code(emu, "PUT", f"{TAGS}/TROJAN", [{"weight": 2}]) == 200
    for bad in ([{"name": "other"}], [{"weight": 6}], [{"name": "a b"}], []):
        assert await code(emu, "PUT", f"{TAGS}/TROJAN", bad) == 400, bad
    assert emu.tags() == {"TROJAN": 2, "OTHER": 1}


async def test_tag_deletion(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("T")
    await put(emu, [{"indicator": "a.example", "tags": ["T"]}])
    assert await call(emu, "DELETE", f"{TAGS}/t") == (200, [{"status": "Tag successfully deleted"}])
    assert emu.tags() == {} and emu.indicators("S")["a.example"].tags == set()
    status, body = await call(emu, "DELETE", f"{TAGS}/T")
    assert status == 400 and error(body)["reason"] == "Tag doesn't exist"


# PUT and DELETE indicators (the pages in the PUT/DELETE indicators texts, 198660)


async def test_put_is_an_upsert_that_replaces_context(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S")
    assert await put(emu, [{"indicator": "a.example", "context": {"x": "1", "y": 2}}]) == (
        201,
        [{"status": "All indicators were successfully added to the database"}],
    )
    first = emu.indicators("S")["a.example"]
    assert (first.type, first.context, first.tags) == ("URL", {"x": "1", "y": 2}, set())
    assert first.updated == clock.now
    clock.now += 10
    both = [{"indicator": "a.example", "context": {"z": True}}, {"indicator": "b.example"}]
    assert (await put(emu, both))[0] == 201
    held = emu.indicators("S")
    assert held.keys() == {"a.example", "b.example"}
    assert held["a.example"].context == {"z": True}, "context is replaced, not merged"
    assert held["a.example"].updated == clock.now
    await put(emu, [{"indicator": "a.example"}])
    assert emu.indicators("S")["a.example"].context == {}


async def test_put_tags_absent_empty_or_given(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("A")
    emu.add_tag("b")
    await put(emu, [{"indicator": "a.example", "tags": ["a", "B"]}])
    assert emu.indicators("S")["a.example"].tags == {"A", "B"}
    await put(emu, [{"indicator": "a.example", "context": {"k": "v"}}])
    assert emu.indicators("S")["a.example"].tags == {"A", "B"}, "absent tags: unchanged"
    await put(emu, [{"indicator": "a.example", "tags": ["b"]}])
    assert emu.indicators("S")["a.example"].tags == {"B"}, "given tags: replaced"
    await put(emu, [{"indicator": "a.example", "tags": []}])
    assert emu.indicators("S")["a.example"].tags == set(), "empty tags: all removed"
    assert emu.tags() == {"A": 0, "B": 0}, "the tags themselves stay"
    emu.delete_tag("a")
    status, body = await put(emu, [{"indicator": "a.example", "tags": ["A"]}])
    assert status == 202 and "Unknown tag" in reasons(body)["a.example"]


async def test_a_tags_field_under_api_1_0_is_a_400(emu: Emulator) -> None:
    emu.add_supplier("S")
    items = [{"indicator": "a.example"}, {"indicator": "b.example", "tags": []}]
    assert (await put(emu, items, version="1.0"))[0] == 400
    assert emu.indicators("S") == {}
    assert (await put(emu, items[:1], version="1.0"))[0] == 201


async def test_partial_success_applies_the_valid_indicators(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("KNOWN")
    status, body = await put(
        emu,
        [
            {"indicator": "good.example", "tags": ["known"]},
            {"indicator": "bad indicator"},
            {"indicator": "bad\\.example.com"},
            {"indicator": "t.example", "tags": ["NOPE"]},
            {"indicator": "n.example", "context": {"deep": {"x": 1}}},
            {"indicator": "l.example", "context": ["x"]},
            {"indicator": "e.example", "context": {}},
            {"indicator": "z.example", "context": {"x": None}},
            {"indicator": "s.example", "tags": "KNOWN"},
            {"indicator": MD5, "context": {"ok": 1.5}},
        ],
    )
    assert status == 202
    assert (
        body[0]["status"] == "An error occurred while adding some of the indicators to the database"
    )
    errors = reasons(body)
    assert set(errors) == {
        *("bad indicator", "bad\\.example.com", "t.example", "n.example"),
        *("l.example", "e.example", "z.example", "s.example"),
    }
    assert errors["bad indicator"] == "Invalid indicator format"
    assert "Unknown tag" in errors["t.example"]
    assert emu.indicators("S").keys() == {"good.example", MD5.upper()}


async def test_false_positive_takes_no_context(emu: Emulator) -> None:
    items = [
        {"indicator": "a.example", "context": {"a": "b"}},
        {"indicator": "b.example", "context": {}},
        {"indicator": "c.example"},
    ]
    status, body = await put(emu, items, supplier="FalsePositive")
    assert status == 202 and set(reasons(body)) == {"a.example", "b.example"}
    assert all("FalsePositive" in reason for reason in reasons(body).values())
    assert emu.indicators("FalsePositive").keys() == {"c.example"}


async def test_malformed_items_refuse_the_whole_batch(emu: Emulator) -> None:
    emu.add_supplier("S")
    for bad in ("a.example", {"value": "a.example"}, {"indicator": 5}, None, ["a.example"]):
        assert (await put(emu, [{"indicator": "ok.example"}, bad]))[0] == 400, bad
        assert (await delete(emu, [{"indicator": "ok.example"}, bad]))[0] == 400, bad
    assert emu.indicators("S") == {}


async def test_mark_and_unmark_detections_need_api_1_2(emu: Emulator) -> None:
    marked = {"indicator": MD5, "mark_detections": True}
    assert (await put(emu, [marked], "FalsePositive", version="1.1"))[0] == 400
    assert (await put(emu, [{**marked, "mark_detections": 1}], "FalsePositive"))[0] == 400
    assert emu.indicators("FalsePositive") == {}
    assert (await put(emu, [marked], "FalsePositive"))[0] == 201
    item = {"indicator": MD5, "unmark_detections": True}
    assert (await delete(emu, [item], "FalsePositive", version="1.1"))[0] == 400
    assert (await delete(emu, [{**item, "unmark_detections": "yes"}], "FalsePositive"))[0] == 400
    assert emu.indicators("FalsePositive").keys() == {MD5.upper()}
    assert (await delete(emu, [item], "FalsePositive"))[0] == 201
    assert emu.indicators("FalsePositive") == {}


async def test_values_are_stored_canonical(emu: Emulator) -> None:
    emu.add_supplier("S")
    await put(emu, [{"indicator": "http://www.Example.com:8080/a/", "context": {"v": 1}}])
    assert (await put(emu, [{"indicator": "example.com/a", "context": {"v": 2}}]))[0] == 201
    await put(emu, [{"indicator": MD5}, {"indicator": "10.0.0.1"}, {"indicator": "Host.Example."}])
    held = emu.indicators("S")
    assert {value: found.type for value, found in held.items()} == {
        "example.com/a": "URL",
        MD5.upper(): "MD5",
        "10.0.0.1": "IP",
        "host.example": "URL",
    }
    assert held["example.com/a"].context == {"v": 2}
    assert await delete(emu, [{"indicator": "https://EXAMPLE.com/a#x"}, {"indicator": MD5}]) == (
        201,
        [{"status": "All indicators were successfully deleted from the database"}],
    )
    assert emu.indicators("S").keys() == {"10.0.0.1", "host.example"}


async def test_delete_reports_absent_and_invalid_and_deletes_the_rest(emu: Emulator) -> None:
    emu.add_supplier("S")
    await put(emu, [{"indicator": f"{name}.example"} for name in "abc"])
    status, body = await delete(
        emu,
        [
            {"indicator": "a.example"},
            {"indicator": "gone.example"},
            {"indicator": "bad value"},
            {"indicator": "c.example"},
        ],
    )
    assert status == 202
    assert body[0]["status"] == (
        "An error occurred while deleting some of the indicators from the database"
    )
    assert reasons(body) == {
        "gone.example": "Indicator doesn't exist",
        "bad value": "Invalid indicator format",
    }
    assert emu.indicators("S").keys() == {"b.example"}


async def test_delete_works_on_the_builtin_suppliers(emu: Emulator) -> None:
    await put(emu, [{"indicator": "a.example"}], supplier="FalsePositive")
    assert (await delete(emu, [{"indicator": "a.example"}], supplier="FalsePositive"))[0] == 201
    status, body = await delete(emu, [{"indicator": "b.example"}], supplier="InternalTI")
    assert status == 202 and reasons(body) == {"b.example": "Indicator doesn't exist"}


# Retention (198625, 198644)


async def test_retention_counts_from_the_last_update(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", retention=1)
    emu.add_supplier("Forever", retention=0)
    await put(emu, [{"indicator": "a.example"}, {"indicator": "b.example"}])
    await put(emu, [{"indicator": "a.example"}], supplier="Forever")
    clock.now += 45
    await put(emu, [{"indicator": "a.example"}])
    clock.now += 30
    assert emu.indicators("S").keys() == {"a.example"}
    query = [{"object": "b.example"}, {"object": "a.example"}]
    _, body = await call(emu, "POST", "/api/1.2/lookup", query)
    assert [item["result"] for item in body] == ["not detected", "detected"]
    clock.now += 3600
    assert emu.indicators("S") == {}
    assert emu.indicators("Forever").keys() == {"a.example"}


async def test_expired_indicators_are_kept(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", retention=1)
    emu.add_tag("T")
    await put(emu, [{"indicator": "a.example", "tags": ["T"]}, {"indicator": "b.example"}])
    clock.now += 61
    assert emu.indicators("S") == {} and emu.stored("S").keys() == {"a.example", "b.example"}
    await put(emu, [{"indicator": "a.example"}])
    assert emu.indicators("S")["a.example"].tags == {"T"}, "an update of a held indicator"
    assert await delete(emu, [{"indicator": "b.example"}]) == (
        201,
        [{"status": "All indicators were successfully deleted from the database"}],
    )
    await call(emu, "PUT", f"{SUPPLIERS}/S", [{"retention": 10}])
    assert emu.indicators("S").keys() == {"a.example"}


# Lookup (198540)


async def test_lookup_request_shape(emu: Emulator) -> None:
    bad: list[Any]
    for bad in ([], [{"indicator": "a.example"}], [{"object": 5}], ["a.example"]):
        status, body = await call(emu, "POST", "/api/1.2/lookup", bad)
        assert status == 400 and error(body)["reason"], bad


async def test_lookup_answers_in_the_documented_shape(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S")
    emu.add_tag("X")
    await put(emu, [{"indicator": "http://Example.com/p", "context": {"k": "v"}, "tags": ["x"]}])
    # As an analyst adds to InternalTI in CyberTrace Web.
    internal = EmulatedIndicator("10.0.0.1", "IP", {}, set(), clock.now)
    emu.api.suppliers["InternalTI"].indicators["10.0.0.1"] = internal
    query = [{"object": "WWW.example.com/p/"}, {"object": "no.example"}, {"object": "10.0.0.1"}]
    assert await call(emu, "POST", "/api/1.1/lookup", query) == (
        200,
        [
            {
                "object": "WWW.example.com/p/",
                "result": "detected",
                "categories": [
                    {"category": "S", "detected_indicator": "example.com/p", "context": {"k": "v"}}
                ],
            },
            {"object": "no.example", "result": "not detected", "categories": []},
            {
                "object": "10.0.0.1",
                "result": "detected",
                "categories": [
                    {
                        "category": "KL_InternalTI_IP",
                        "detected_indicator": "10.0.0.1",
                        "context": {},
                    }
                ],
            },
        ],
    )


async def test_lookup_matches_enabled_live_suppliers_of_the_tenant(
    mt: Emulator, clock: Clock
) -> None:
    mt.add_supplier("Off", tenant="acme")
    mt.add_supplier("Short", retention=1, tenant="acme")
    mt.add_supplier("Elsewhere", tenant="other")
    for name in ("Off", "Short", "Elsewhere"):
        await put(mt, [{"indicator": "a.example"}], supplier=name)
    await put(mt, [{"indicator": "a.example"}], supplier="FalsePositive")
    await call(mt, "PUT", f"{SUPPLIERS}/Off", [{"status": "disabled"}])

    async def categories(tenant: str) -> list[str]:
        path = f"/api/1.3/{tenant}/lookup"
        _, body = await call(mt, "POST", path, [{"object": "a.example"}])
        return [c["category"] for c in body[0]["categories"]]

    assert await categories("acme") == ["Short"]
    assert await categories("other") == ["Elsewhere"]
    clock.now += 61
    assert await categories("acme") == []


# The readings (one test per switch, every reading)


@pytest.mark.parametrize("status", [400, 404])
async def test_missing_supplier_status(status: int) -> None:
    emulator = await with_reading(missing_supplier_status=status)
    try:
        for method, path, body in (
            ("GET", f"{SUPPLIERS}/Nope", None),
            ("PUT", f"{SUPPLIERS}/Nope", [{"confidence": 1}]),
            ("DELETE", f"{SUPPLIERS}/Nope", None),
            ("PUT", f"{SUPPLIERS}/Nope/indicators", [{"indicator": "a.example"}]),
            ("DELETE", f"{SUPPLIERS}/Nope/indicators", [{"indicator": "a.example"}]),
        ):
            got, answer = await call(emulator, method, path, body)
            assert got == status and error(answer)["reason"] == "Supplier doesn't exist"
        assert emulator.supplier("Nope") is None
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["never", "refuse"])
async def test_retention_zero(reading: str, clock: Clock) -> None:
    emulator = await with_reading(retention_zero=reading, clock=clock)
    try:
        created = await code(emulator, "POST", SUPPLIERS, [{**OK_SUPPLIER, "retention": 0}])
        emulator.add_supplier("T", retention=5)
        updated = await code(emulator, "PUT", f"{SUPPLIERS}/T", [{"retention": 0}])
        if reading == "refuse":
            assert (created, updated) == (400, 400)
            assert emulator.supplier("S") is None
            return
        assert (created, updated) == (201, 200)
        await put(emulator, [{"indicator": "a.example"}])
        clock.now += 10**9
        assert emulator.indicators("S").keys() == {"a.example"}, "0 minutes: never expires"
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["assigned", "immediate"])
async def test_tenant_visibility(reading: str) -> None:
    emulator = await with_reading(tenant_visibility=reading, tenants=("acme",))
    try:
        assert await code(emulator, "POST", "/api/1.3/suppliers", [OK_SUPPLIER]) == 201
        seen = await code(emulator, "GET", "/api/1.3/acme/suppliers/S")
        written = await put(emulator, [{"indicator": "a.example"}], version="1.3/acme")
        if reading == "immediate":
            assert (seen, written[0]) == (200, 201)
            return
        assert (seen, written[0]) == (400, 400), "not visible before an assignment"
        emulator.assign_supplier("S", "acme")
        assert await code(emulator, "GET", "/api/1.3/acme/suppliers/S") == 200
        assert (await put(emulator, [{"indicator": "a.example"}], version="1.3/acme"))[0] == 201
        assert emulator.indicators("S", tenant="acme").keys() == {"a.example"}
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["strict", "lenient"])
async def test_accept_header(reading: str) -> None:
    emulator = await with_reading(accept_header=reading)
    try:
        plain = {"Authorization": JSON["Authorization"]}
        got = [
            await code(emulator, "GET", SUPPLIERS, head=head)
            for head in (plain, {**plain, "Accept": "*/*"}, {**plain, "Accept": "application/*"})
        ]
        assert got == ([406, 406, 406] if reading == "strict" else [200, 200, 200])
        assert await code(emulator, "GET", SUPPLIERS, head={**plain, "Accept": "text/html"}) == 406
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["refuse", "accept"])
async def test_internal_ti_put(reading: str) -> None:
    emulator = await with_reading(internal_ti_put=reading)
    try:
        status, _ = await put(emulator, [{"indicator": "a.example"}], supplier="InternalTI")
        assert status == (400 if reading == "refuse" else 201)
        assert (await put(emulator, [{"indicator": "a.example"}], supplier="FalsePositive"))[
            0
        ] == 201
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["refuse", "accept"])
async def test_empty_batch(reading: str) -> None:
    emulator = await with_reading(empty_batch=reading)
    try:
        emulator.add_supplier("S")
        expected = 400 if reading == "refuse" else 201
        assert ((await put(emulator, []))[0], (await delete(emulator, []))[0]) == (
            expected,
            expected,
        )
    finally:
        await emulator.stop()


@pytest.mark.parametrize("status", [202, 400])
async def test_all_rejected_status(status: int) -> None:
    emulator = await with_reading(all_rejected_status=status)
    try:
        emulator.add_supplier("S")
        assert (await put(emulator, [{"indicator": "x y"}, {"indicator": "a b"}]))[0] == status
        assert (await delete(emulator, [{"indicator": "gone.example"}]))[0] == status
        assert (await put(emulator, [{"indicator": "x y"}, {"indicator": "a.example"}]))[0] == 202
    finally:
        await emulator.stop()


@pytest.mark.parametrize("reading", ["refuse", "ignore"])
async def test_unknown_fields(reading: str) -> None:
    emulator = await with_reading(unknown_fields=reading)
    try:
        emulator.add_supplier("U")
        got = (
            await code(emulator, "POST", SUPPLIERS, [{**OK_SUPPLIER, "status": "enabled"}]),
            await code(emulator, "POST", TAGS, [{"name": "t", "weight": 1, "colour": "red"}]),
            await code(emulator, "PUT", f"{SUPPLIERS}/U", [{"id": 1}]),
        )
        assert got == ((400, 400, 400) if reading == "refuse" else (201, 201, 200))
    finally:
        await emulator.stop()


@pytest.mark.parametrize("status", [400, 404])
async def test_missing_tag_status(status: int) -> None:
    emulator = await with_reading(missing_tag_status=status)
    try:
        for method, body in (("GET", None), ("PUT", [{"weight": 1}]), ("DELETE", None)):
            got, answer = await call(emulator, method, f"{TAGS}/NOPE", body)
            assert got == status and error(answer)["reason"] == "Tag doesn't exist"
    finally:
        await emulator.stop()


# The table itself

TEST_REFERENCE = re.compile(r"tests/([\w/]+\.py)::(\w+)")


def conformance_rows() -> list[list[str]]:
    """The rows of docs/emulator.md's conformance table (the one with a Test column)."""
    lines = (ROOT / "docs" / "emulator.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Rule") and "Test" in line)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_the_conformance_table_names_real_tests() -> None:
    rows = conformance_rows()
    assert len(rows) > 40
    for row in rows:
        named = TEST_REFERENCE.findall(row[-1])
        assert named, f"no test named for: {row[0]}"
        for file, name in named:
            assert (ROOT / "tests" / file).is_file(), f"{file} in: {row[0]}"
            assert name in defined_tests(ROOT / "tests" / file), f"{file}::{name} in: {row[0]}"


def test_every_test_the_document_names_exists() -> None:
    named = TEST_REFERENCE.findall((ROOT / "docs" / "emulator.md").read_text())
    assert len(named) > 50
    for file, name in named:
        assert name in defined_tests(ROOT / "tests" / file), f"{file}::{name}"


def test_every_switch_has_a_row() -> None:
    text = " ".join(" ".join(row) for row in conformance_rows())
    for name in Readings.__dataclass_fields__:
        assert f"`{name}`" in text, name
