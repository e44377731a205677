"""Grouping a poll's sessions once into integer codes."""

from __future__ import annotations

from exporter.digest.groups import Groups, SnapshotGroups, shared
from tests.payloads import document, perspective, snapshot_of, vision


def test_codes_follow_first_appearance_and_keys_map_back() -> None:
    groups = Groups.of([("P", "browser", "a"), ("P", "ios", "b"), ("P", "browser", "a")])
    assert groups.codes == [0, 1, 0]
    assert groups.keys == (("P", "browser", "a"), ("P", "ios", "b"))
    assert groups.counts() == {("P", "browser", "a"): 2, ("P", "ios", "b"): 1}


def test_sums_per_code_treat_none_as_zero() -> None:
    groups = Groups.of(["x", "y", "x", "x"])
    assert groups.sums([1, 5, None, 2.5]) == [3.5, 5]


def test_owners_reorder_each_key() -> None:
    groups = Groups.of([("P", "browser", "a"), ("Q", "ios", "b")])
    assert groups.owners(2, 0) == (("a", "P"), ("b", "Q"))


def test_shared_makes_equal_strings_one_object() -> None:
    first, second = "".join(["op", "erator"]), "".join(["oper", "ator"])
    assert first is not second
    values = shared([first, None, second, 3])
    assert values == ("operator", None, "operator", 3)
    assert values[0] is values[2]


def test_a_snapshots_groups() -> None:
    snap = snapshot_of(document(
        [perspective("1", "u", "P", "browser"), perspective("2", "u", "P", "browser"),
         perspective("3", "v", "P", "ios")],
        [vision("op", "P"), vision("eng", "P", designer=True, client_id="2")]))
    groups = SnapshotGroups.of(snap)
    assert groups.perspective.codes == [0, 0, 1]
    assert groups.perspective.keys == (("P", "browser", "u"), ("P", "ios", "v"))
    assert groups.clients.keys == (("P", "op", False), ("P", "eng", True))
