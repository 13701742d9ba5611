"""The CyberTrace REST API client: its version, its routes and what it asks.

Suppliers, tags, indicators and lookups as the documented API has them, in
the tenant where one is configured. The HTTP side (session, retries, 425
waits) is session.py's; reading answers and their errors is answers.py's.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Unpack
from urllib.parse import quote

import orjson

from feedsync import logs
from feedsync.config import CyberTraceConfig, SupplierConfig
from feedsync.cybertrace.answers import (
    Answer,
    Outcome,
    answer_error,
    error_indicators,
    named,
    status_text,
)
from feedsync.cybertrace.session import Hooks, Method, Session
from feedsync.errors import CyberTraceError, RequestError

PUT_LIMIT = 134217728
DELETE_LIMIT = 67108864
VERSIONS = ("1.3", "1.2", "1.1", "1.0")

log = logs.get("feedsync.cybertrace")

__all__ = ["DELETE_LIMIT", "PUT_LIMIT", "Answer", "CyberTrace", "Outcome"]

IndicatorMethod = Literal["PUT", "DELETE"]


class CyberTrace:
    """A connection to one CyberTrace server."""

    def __init__(self, config: CyberTraceConfig, **hooks: Unpack[Hooks]) -> None:
        """``hooks``: how the session reports and waits (session.Hooks), for metrics
        and for tests that keep time themselves."""
        self.config = config
        self.version = config.api_version
        self._http = Session(config, **hooks)

    async def __aenter__(self) -> CyberTrace:
        await self._http.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.close()

    @property
    def tags_supported(self) -> bool:
        return self.version != "1.0"

    async def resolve_version(self) -> str:
        """With ``api_version: auto``, the highest version the server answers."""
        if self.version != "auto":
            return self.version
        for version in VERSIONS:
            answer = await self._http.request("GET", f"/api/{version}/suppliers", "", retry=True)
            if answer.status != 404:
                self.check(answer, "GET", "suppliers")
                self._refuse_untenanted(version)
                self.version = version
                log.info("cybertrace.version", version=version)
                return version
        raise RequestError(404, "CyberTrace answers none of the API versions 1.0-1.3")

    def _refuse_untenanted(self, version: str) -> None:
        # Below 1.3 there are no tenant routes: every write would land in the General tenant.
        if self.config.tenant and version != "1.3":
            raise CyberTraceError(
                f"cybertrace.tenant is {self.config.tenant!r}, but the server speaks API"
                f" {version} at most, which has no tenants; refusing to write to the General"
                " tenant instead (remove cybertrace.tenant or upgrade CyberTrace)"
            )

    # Suppliers

    async def supplier_names(self) -> set[str]:
        """The suppliers CyberTrace lists (``GET suppliers``, which includes the
        built-in FalsePositive and InternalTI): the documented way to tell existence."""
        answer = await self._http.request("GET", self._path("suppliers", tenant=False), "")
        self.check(answer, "GET", "suppliers")
        if not isinstance(answer.body, list):
            raise RequestError(answer.status, "GET suppliers: the answer is not a JSON array")
        names = set()
        for item in answer.body:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RequestError(
                    answer.status, "GET suppliers: an entry of the answer has no name"
                )
            names.add(item["name"])
        return names

    async def supplier(self, name: str) -> dict[str, Any] | None:
        """The supplier's settings (``GET suppliers/{name}``, in the tenant if one is
        configured), or None where CyberTrace answers 400 or 404: the documentation
        gives no status for a missing supplier, so the caller decides from the list."""
        answer = await self._http.request("GET", self._path(f"suppliers/{_segment(name)}"), name)
        if answer.status in (400, 404):
            log.debug("cybertrace.supplier_unreadable", supplier=name, status=answer.status)
            return None
        self.check(answer, "GET", f"suppliers/{name}")
        if isinstance(answer.body, list) and answer.body and isinstance(answer.body[0], dict):
            return answer.body[0]
        raise RequestError(answer.status, f"GET suppliers/{name}: the answer is not readable")

    async def create_supplier(self, supplier: SupplierConfig) -> None:
        # POST suppliers has no tenant form (page 198593): a tenant's administrator assigns it.
        body = [_supplier_body(supplier)]
        path = self._path("suppliers", tenant=False)
        answer = await self._send("POST", path, supplier.name, body)
        self.check(answer, "POST", "suppliers")

    async def update_supplier(self, supplier: SupplierConfig) -> None:
        path = self._path(f"suppliers/{_segment(supplier.name)}")
        answer = await self._send("PUT", path, supplier.name, [_supplier_body(supplier)])
        self.check(answer, "PUT", f"suppliers/{supplier.name}")

    # Tags

    async def tags(self) -> set[str]:
        answer = await self._http.request("GET", self._path("tags", tenant=False), "")
        self.check(answer, "GET", "tags")
        if not isinstance(answer.body, list):
            raise RequestError(answer.status, "GET tags: the answer is not a JSON array")
        return {str(item["name"]).upper() for item in answer.body if named(item)}

    async def create_tag(self, name: str, weight: int) -> Answer:
        """``POST tags`` with one tag object, as the documentation requires; the
        answer is returned for the caller to judge (an existing name is refused)."""
        body = [{"name": name, "weight": weight}]
        return await self._send("POST", self._path("tags", tenant=False), "", body)

    # Indicators

    async def put_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("PUT", supplier, body)

    async def delete_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("DELETE", supplier, body)

    async def _indicators(self, method: IndicatorMethod, supplier: str, body: bytes) -> Outcome:
        path = self._path(f"suppliers/{_segment(supplier)}/indicators")
        answer = await self._http.request(method, path, supplier, body=body, retry=True)
        if answer.status == 202:
            errors = error_indicators(answer.body)
            if errors is None:
                return Outcome(202, readable=False, text=status_text(answer.body))
            return Outcome(202, errors)
        self.check(answer, method, f"suppliers/{supplier}/indicators")
        return Outcome(answer.status)

    # Lookup

    async def lookup(self, value: str) -> bool | None:
        """Whether CyberTrace matches ``value`` (``POST lookup``, page 198540), or
        None where the answer does not tell: the page's words for ``result`` are
        lost, so a match is read from its ``categories``, which the page keeps."""
        path = self._path("lookup")
        if path.startswith("/api/1.3/lookup"):
            # API 1.3 has only the tenant form (198593); 1.2's untenanted one acts in
            # the General tenant, where a supplier made outside any tenant is.
            path = "/api/1.2/lookup"
        answer = await self._send("POST", path, "", [{"object": value}])
        if answer.status == 404:
            return None
        self.check(answer, "POST", "lookup")
        body = answer.body
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            return None
        categories = body[0].get("categories")
        if not isinstance(categories, list):
            return None
        return bool(categories)

    # Transport

    def _path(self, tail: str, *, tenant: bool = True) -> str:
        if tenant and self.version == "1.3" and self.config.tenant:
            return f"/api/1.3/{_segment(self.config.tenant)}/{tail}"
        return f"/api/{self.version}/{tail}"

    def check(self, answer: Answer, method: Method, what: str) -> None:
        """Raise the error an answer that is no success stands for."""
        error = answer_error(answer, method, what, self.config.username, self._http.route)
        if error is not None:
            raise error

    async def _send(self, method: Method, path: str, supplier: str, body: object) -> Answer:
        return await self._http.request(method, path, supplier, body=orjson.dumps(body), retry=True)


def _supplier_body(supplier: SupplierConfig) -> dict[str, object]:
    body: dict[str, object] = {
        "name": supplier.name,
        "confidence": supplier.confidence,
        "retention": supplier.retention,
    }
    if supplier.vendor is not None:
        body["vendor"] = supplier.vendor
    return body


def _segment(name: str) -> str:
    """A name as one path segment: ``/``, ``?``, ``#`` and ``%`` escaped too."""
    return quote(name, safe="")
