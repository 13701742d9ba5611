"""The readings of the CyberTrace pages the emulator can play, one switch each.

Where the documentation is silent or ambiguous the client must work with every
plausible reading; the emulator plays one of them at a time. Each default is
the strictest plausible reading, so that a client tested against the defaults
meets no CyberTrace that is harsher. docs/emulator.md lists them with the
pages and tests.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Literal, get_args

# GET/PUT/DELETE suppliers/{s} and PUT/DELETE indicators naming a supplier that
# does not exist: no page gives a status.
MissingStatus = Literal[400, 404]
# retention 0 in POST/PUT suppliers: the pages give no meaning to it.
RetentionZero = Literal["never", "refuse"]
# How a supplier created with the untenanted POST suppliers becomes visible in
# a tenant: after an administrator's assignment, or at once in every tenant.
TenantVisibility = Literal["assigned", "immediate"]
# Page 198537: every request "must have" Accept with "the application/json
# value"; 406 (198539) names only a format that is not supported. strict: the
# header is required and must list application/json; lenient: absent, */* and
# application/* pass too.
AcceptHeader = Literal["strict", "lenient"]
# PUT indicators on InternalTI: the PUT page updates only "suppliers created with
# the REST API" but names only FalsePositive as an exception (for its context).
InternalTiPut = Literal["refuse", "accept"]
# PUT/DELETE indicators with [] as the body: only lookup says "at least one".
EmptyBatch = Literal["refuse", "accept"]
# A PUT/DELETE whose every indicator is rejected: 202 lists a "subset" (the
# pages' 202 examples hold only errors), or the request is refused.
AllRejectedStatus = Literal[202, 400]
# Properties the supplier and tag pages do not list.
UnknownFields = Literal["refuse", "ignore"]
# GET/PUT/DELETE tags/{tag} of a missing tag: the page gives the body, not the status.
MissingTagStatus = Literal[400, 404]


@dataclass(frozen=True, slots=True)
class Readings:
    missing_supplier_status: MissingStatus = 400
    retention_zero: RetentionZero = "refuse"
    tenant_visibility: TenantVisibility = "assigned"
    accept_header: AcceptHeader = "strict"
    internal_ti_put: InternalTiPut = "refuse"
    empty_batch: EmptyBatch = "refuse"
    all_rejected_status: AllRejectedStatus = 202
    unknown_fields: UnknownFields = "refuse"
    missing_tag_status: MissingTagStatus = 400

    def __post_init__(self) -> None:
        # A typo in a test or on the command line must not silently play the default.
        hints = {f.name: f.type for f in fields(self)}
        for name, kind in hints.items():
            allowed = get_args(globals()[str(kind)])
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per reading, named after its keyword (``_`` as ``-``)."""
    group = parser.add_argument_group("readings of the CyberTrace documentation")
    for item in fields(Readings):
        allowed = get_args(globals()[str(item.type)])
        group.add_argument(
            "--" + item.name.replace("_", "-"),
            type=type(allowed[0]),
            choices=allowed,
            default=item.default,
            help=f"default: {item.default}",
        )


def from_args(args: argparse.Namespace) -> Readings:
    return Readings(**{item.name: getattr(args, item.name) for item in fields(Readings)})
