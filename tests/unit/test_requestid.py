"""Request ids keep the shape users grep for: random version-4 UUIDs, all different."""

from __future__ import annotations

import uuid

from lambdad.requestid import RequestIds, new_request_id


def test_ids_are_version_4_uuids_in_their_usual_text_form() -> None:
    ids = RequestIds()
    for _ in range(1000):  # several refills of the random bytes
        text = ids()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lowercase, dashes where uuid4's are
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat_and_use_every_random_digit() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    # Every hex digit appears at every random place: nothing is a counter or a constant.
    for place in (0, 7, 9, 15, 20, 24, 35):
        assert {i[place] for i in ids} == set("0123456789abcdef")
    assert {i[19] for i in ids} == set("89ab")  # the variant digit
    assert {i[14] for i in ids} == {"4"}  # the version digit


def test_two_sources_do_not_share_their_bytes() -> None:
    a, b = RequestIds(), RequestIds()
    assert {a() for _ in range(300)}.isdisjoint({b() for _ in range(300)})
