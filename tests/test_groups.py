"""Grouping a poll's sessions once into integer codes."""

from __future__ import annotations

import secrets
import sys

import pytest

from exporter.digest import groups as groups_module
from exporter.digest.groups import Groups, Shown, SnapshotGroups, one_copy, shared
from tests.payloads import document, perspective, snapshot_of, vision


def test_codes_follow_first_appearance_and_keys_map_back() -> None:
    groups = Groups.of([("P", "browser", "a"), ("P", "ios", "b"), ("P", "browser", "a")])
    assert groups.codes == [0, 1, 0]
    assert groups.keys == (("P", "browser", "a"), ("P", "ios", "b"))
    assert groups.counts() == {("P", "browser", "a"): 2, ("P", "ios", "b"): 1}


def test_sums_per_code_treat_none_as_zero() -> None:
    groups = Groups.of(["x", "y", "x", "x"])
    assert groups.sums([1, 5, None, 2.5]) == [3.5, 5]


def test_shared_makes_equal_strings_one_object() -> None:
    first, second = "".join(["op", "erator"]), "".join(["oper", "ator"])
    assert first is not second
    values = shared([first, None, second, 3])
    assert values == ("operator", None, "operator", 3)
    assert values[0] is values[2]


def fresh(text: str) -> str:
    """An equal string that is another object."""
    return "".join([text[:1], text[1:]])


def test_shared_strings_are_not_interned() -> None:
    """sys.intern makes its strings immortal on Python 3.12.0 to 3.12.5 and on free-threaded
    builds: a gateway sending a new project or username on every poll would grow the
    exporter for ever. Equal values from separate polls or gateways are still one object."""
    name = f"project-{secrets.token_hex(8)}"
    kept = shared([fresh(name)])[0]
    assert shared([fresh(name)])[0] is kept
    assert sys.intern(fresh(name)) is not kept


def test_the_table_of_shared_strings_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SHARED_STRINGS values it starts afresh; longer values are never kept in it."""
    monkeypatch.setattr(groups_module, "SHARED_STRINGS", 10)
    first = one_copy(fresh(f"first-{secrets.token_hex(8)}"))
    for number in range(10):
        one_copy(f"invented-{number}-{secrets.token_hex(8)}")
    assert one_copy(fresh(first)) is not first
    long = "x" * (groups_module.MAX_SHARED_CHARS + 1)
    assert one_copy(long) is long and one_copy(fresh(long)) is not long


def test_a_snapshots_groups() -> None:
    snap = snapshot_of(document(
        [perspective("1", "u", "P", "browser"), perspective("2", "u", "P", "browser"),
         perspective("3", "v", "P", "ios")],
        [vision("op", "P"), vision("eng", "P", designer=True, client_id="2")]))
    groups = SnapshotGroups.of(snap)
    assert groups.perspective.codes == [0, 0, 1]
    assert groups.perspective.keys == (("P", "browser", "u"), ("P", "ios", "v"))
    assert groups.clients.keys == (("P", "op", False), ("P", "eng", True))


def test_folding_keeps_the_values_holding_most_items_ties_by_value() -> None:
    groups = Groups.of([("A", "x"), ("B", "x"), ("B", "y"), ("C", "x"), ("D", "x"), ("A", "y")])
    folded, count = groups.folded(0, 2)
    assert count == 2  # C and D, one item each; A and B hold two each
    assert folded.keys == (("A", "x"), ("B", "x"), ("B", "y"), ("__other__", "x"), ("A", "y"))
    assert folded.counts() == {("A", "x"): 1, ("B", "x"): 1, ("B", "y"): 1,
                               ("__other__", "x"): 2, ("A", "y"): 1}
    tie, _ = Groups.of([("Z", 1), ("Y", 1), ("X", 1)]).folded(0, 1)
    assert {key[0] for key in tie.keys} == {"X", "__other__"}


def test_folding_under_the_limit_is_the_same_groups() -> None:
    groups = Groups.of([("A", "x"), ("B", "x")])
    assert groups.folded(0, 2) == (groups, 0)
    assert groups.folded(0, 2)[0] is groups


def test_a_snapshots_capped_groups_fold_projects_and_scopes() -> None:
    snap = snapshot_of(document(
        [perspective(str(i), "u", f"P{i % 4}", f"scope-{i}") for i in range(40)],
        [vision("op", f"V{i}", client_id=str(i)) for i in range(5)]))
    groups = SnapshotGroups.of(snap)
    capped, folded = groups.capped(max_projects=3)
    assert folded == {"project": 2, "scope": 40 - 16}
    assert {key[0] for key in capped.perspective.keys} == {"P0", "P1", "P2", "__other__"}
    assert len({key[1] for key in capped.perspective.keys}) == 16 + 1
    assert {key[0] for key in capped.clients.keys} == {"V0", "V1", "V2", "__other__"}
    assert groups.capped(max_projects=5)[1] == {"project": 0, "scope": 24}


def test_coarser_groups_regroup_the_same_items_by_fewer_values() -> None:
    groups = Groups.of([("P", "browser", "a"), ("P", "ios", "b"), ("P", "browser", "b"),
                        ("Q", "browser", "a")])
    scopes = groups.coarser(0, 1)
    assert scopes.keys == (("P", "browser"), ("P", "ios"), ("Q", "browser"))
    assert scopes.codes == [0, 1, 0, 2]
    assert scopes.sizes() == [2, 1, 1]
    assert groups.coarser(2, 0).keys == (("a", "P"), ("b", "P"), ("a", "Q"))


def test_folding_counts_the_values_shown_already_first() -> None:
    groups = Groups.of([("a",), ("b",), ("b",), ("c",), ("c",), ("c",)])
    folded, count = groups.folded(0, 3, Shown(frozenset({"A", "gone"}), str.upper))
    # a is shown already: kept though it holds least; gone takes a place too, though absent;
    # the one place left goes to the busiest new value.
    assert folded.keys == (("a",), ("__other__",), ("c",)) and count == 1
    assert folded.codes == [0, 1, 1, 2, 2, 2]
