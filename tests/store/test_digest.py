"""The content digest is part of every state database: it never changes."""

from __future__ import annotations

import hashlib

import pytest

from feedsync.store.snapshot import digest64

# Written by the first release's digest (blake2b of 8 bytes, big-endian, signed):
# a different figure here would re-plan every value of every database.
KNOWN = [
    (b"", -1970711489451281740),
    (b"http://example.com/", -350646258024731386),
    ("\u4e2d".encode() * 100, -388040868365814774),
    (bytes(range(256)), 3111123121379585343),
]


@pytest.mark.parametrize(("data", "digest"), KNOWN)
def test_digest_is_the_released_one(data: bytes, digest: int) -> None:
    assert digest64(data) == digest


def test_digest_is_blake2b_of_eight_bytes_signed() -> None:
    for size in range(0, 300, 7):
        data = bytes((i * 31 + size) % 256 for i in range(size))
        reference = hashlib.blake2b(data, digest_size=8).digest()
        assert digest64(data) == int.from_bytes(reference, "big", signed=True)


def test_digests_do_not_share_state() -> None:
    # The prepared hash is copied for each digest: one digest never feeds the next.
    assert digest64(b"a") == digest64(b"a")
    assert [digest64(b"a"), digest64(b"ab"), digest64(b"a")] == [digest64(b"a")] * 1 + [
        digest64(b"ab"),
        digest64(b"a"),
    ]
