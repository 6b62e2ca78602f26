"""The native consistent-hash ring against its reference twin, and the properties the cluster
relies on: every process computes the same owners, load is balanced, membership changes move
only the chats they must.

Contract tests run on both implementations (the `Impl` fixture), so the model is known to encode
the contract; the property tests then check that both give identical owners and successor lists
on random memberships, vnodes and keys. Balance and movement are measured on the native ring with
fixed node ids, so they are deterministic; the bounds follow from the spread of a node's share,
~1/sqrt(points per node) (see switchboard/router/ring.py).
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core._native.ring import DEFAULT_VNODES, HashRing as NativeRing, key_hash
from switchboard.router.ring import Ring
from tests.reference import ring_model
from tests.reference.ring_model import HashRing as ModelRing

IMPLS = {"native": NativeRing, "model": ModelRing}
KEYS = [f"chat:{i}" for i in range(100_000)]
# Points per node at which every one of up to ten equal nodes stays within 15% of its share:
# the spread is then ~4.4% (1 sd), so 15% is more than 3 sd away.
BALANCED_VNODES = 512


@pytest.fixture(params=sorted(IMPLS))
def Impl(request):
    return IMPLS[request.param]


def node_ids(n: int) -> list[str]:
    return [f"node-{i}" for i in range(n)]


def shares(ring, keys=KEYS) -> Counter:
    return Counter(map(ring.owner, keys))


# ---------------------------------------------------------------------------- the hash
def test_hash_is_fnv1a_then_fmix64_with_fixed_answers():
    # Published FNV-1a 64 vectors pin the model's half; the answers below pin the whole hash:
    # if they change, every chat in a running cluster changes owner.
    assert ring_model.fnv1a64(b"") == 0xCBF29CE484222325
    assert ring_model.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert ring_model.fnv1a64(b"foobar") == 0x85944171F73967E8
    answers = {"": 0xEFD01F60BA992926, "a": 0x82A2A958A9BECE5B, "chat-1": 0xE652DEEAFBC4C96A,
               "日本語": 0xE11518ACC326D0E8, "👋🏽": 0xEBD89988211B6CFE}
    for key, h in answers.items():
        assert key_hash(key) == ring_model.key_hash(key) == h


def test_owners_of_a_fixed_ring_never_change():
    ring = Ring(["node-a", "node-b", "node-c"], epoch=1)
    assert [ring.owner(f"chat-{i}") for i in range(12)] == [
        "node-a", "node-a", "node-b", "node-a", "node-a", "node-b",
        "node-b", "node-a", "node-c", "node-c", "node-b", "node-a"]


# ---------------------------------------------------------------------------- native == model
node_id = st.text(min_size=1, max_size=12)
memberships = st.dictionaries(node_id, st.integers(1, 3), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(members=memberships, vnodes=st.integers(1, 40),
       keys=st.lists(st.text(max_size=24), min_size=1, max_size=30))
def test_native_agrees_with_model(members, vnodes, keys):
    pairs = list(members.items())
    native = NativeRing(pairs, 7, vnodes)
    model = ModelRing(pairs, 7, vnodes)
    assert (native.nodes, native.weights) == (model.nodes, model.weights)
    for key in keys:
        assert native.owner(key) == model.owner(key)
        assert native.owners(key, len(pairs)) == model.owners(key, len(pairs))


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_native_agrees_with_model_at_default_vnodes(n):
    rng = random.Random(n)
    pairs = [(f"{rng.getrandbits(48):x}.node", rng.randint(1, 3)) for _ in range(n)]
    native, model = NativeRing(pairs, 1), ModelRing(pairs, 1)
    keys = [f"{rng.getrandbits(64):x}" for _ in range(3000)]
    assert [native.owner(k) for k in keys] == [model.owner(k) for k in keys]
    assert [native.owners(k, 3) for k in keys[:300]] == [model.owners(k, 3) for k in keys[:300]]


def test_keys_past_the_last_point_wrap_to_the_first():
    pairs = [(node, 1) for node in node_ids(3)]
    model = ModelRing(pairs, 1, vnodes=1)
    last, first_node = model.points[-1], model.nodes[model.ring[0][1]]
    wrapping = [k for k in (f"k{i}" for i in range(2000)) if ring_model.key_hash(k) > last]
    assert wrapping
    native = NativeRing(pairs, 1, vnodes=1)
    assert {native.owner(k) for k in wrapping} == {first_node}


def test_a_key_exactly_on_a_point_belongs_to_that_points_node(Impl):
    # Point j of a node is the hash of utf8(node_id) + le32(j): for j < 128 those bytes are the
    # UTF-8 of node_id + chr(j) + three NULs, a key that lands exactly on the point.
    ring = Impl([(node, 1) for node in node_ids(4)], 1, 100)
    for node in ring.nodes:
        assert {ring.owner(f"{node}{chr(j)}\0\0\0") for j in range(100)} == {node}


# ---------------------------------------------------------------------------- determinism
def test_same_owners_in_another_process_whatever_the_member_order():
    members = {f"10.0.0.{i}:7000": 1 + i % 3 for i in range(9)}
    keys = [f"chat:{i}" for i in range(2000)] + ["", "日本語", "👋🏽 hi"]
    code = (
        "import json, sys\n"
        "from switchboard.router.ring import Ring\n"
        "members, keys = json.load(sys.stdin)\n"
        "ring = Ring(dict(reversed(list(members.items()))), epoch=3)\n"
        "json.dump([ring.owners(k, 3) for k in keys], sys.stdout)\n"
    )
    # A different str hash seed in the child: anything built on hash() would disagree.
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([members, keys]),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    ring = Ring(members, epoch=3)
    assert json.loads(proc.stdout) == [ring.owners(k, 3) for k in keys]


def test_member_order_and_epoch_do_not_change_owners(Impl):
    pairs = [(node, w) for node, w in zip(node_ids(6), [1, 2, 1, 3, 1, 2])]
    a = Impl(pairs, 1, 20)
    b = Impl(list(reversed(pairs)), 99, 20)
    assert (a.epoch, b.epoch) == (1, 99)
    assert a.nodes == b.nodes == tuple(sorted(node_ids(6)))
    assert [a.owners(k, 6) for k in KEYS[:500]] == [b.owners(k, 6) for k in KEYS[:500]]


# ---------------------------------------------------------------------------- balance
@pytest.mark.parametrize("n", range(3, 11))
def test_equal_nodes_each_get_their_share_within_15_percent(n):
    counts = shares(Ring(node_ids(n), epoch=1, vnodes=BALANCED_VNODES))
    share = len(KEYS) / n
    assert set(counts) == set(node_ids(n))
    assert all(abs(c / share - 1) <= 0.15 for c in counts.values()), counts


def test_spread_at_default_vnodes_is_that_of_random_points():
    # A hash that clustered points or keys would show a wider spread than independent uniform
    # points, whose relative sd is ~1/sqrt(160) ~ 8% per node.
    deviations = []
    for n in range(3, 11):
        counts = shares(Ring(node_ids(n), epoch=1))
        deviations += [c * n / len(KEYS) - 1 for c in counts.values()]
    assert statistics.pstdev(deviations) <= 1.25 / DEFAULT_VNODES ** 0.5


def test_weights_are_respected():
    weights = {"a": 1, "b": 2, "c": 3, "d": 2}
    counts = shares(Ring(weights, epoch=1, vnodes=BALANCED_VNODES))
    total = sum(weights.values())
    for node, weight in weights.items():
        assert abs(counts[node] / (len(KEYS) * weight / total) - 1) <= 0.15, counts


# ---------------------------------------------------------------------------- movement
@pytest.mark.parametrize("n", range(1, 11))
def test_adding_a_node_moves_about_its_share_and_only_to_it(n):
    old = Ring(node_ids(n), epoch=1)
    new = Ring(node_ids(n + 1), epoch=2)
    added = f"node-{n}"
    moved = [k for k in KEYS if old.owner(k) != new.owner(k)]
    assert {new.owner(k) for k in moved} == {added}
    fraction = len(moved) / len(KEYS)
    assert abs(fraction * (n + 1) - 1) <= 0.25
    assert new.moved(old) == pytest.approx(fraction, abs=0.01)


@pytest.mark.parametrize("n", range(2, 11))
def test_removing_a_node_moves_only_its_keys_to_their_next_owner(n):
    old = Ring(node_ids(n), epoch=1)
    removed = f"node-{n // 2}"
    new = Ring({node: w for node, w in old.members.items() if node != removed}, epoch=2)
    for key in KEYS[:20_000]:
        first, second = old.owners(key, 2)
        assert new.owner(key) == (second if first == removed else first)


def test_moved_is_zero_for_the_same_members_and_symmetric():
    a = Ring(node_ids(4), epoch=1)
    b = Ring(node_ids(5), epoch=2)
    assert a.moved(Ring(node_ids(4), epoch=9)) == 0.0
    assert a.moved(b) == b.moved(a) > 0


# ---------------------------------------------------------------------------- owners(n)
def test_owners_are_distinct_successors_starting_with_the_owner(Impl):
    ring = Impl([(node, 1) for node in node_ids(5)], 1, 16)
    for key in KEYS[:300]:
        full = ring.owners(key, 5)
        assert sorted(full) == sorted(ring.nodes)
        assert full[0] == ring.owner(key)
        for n in range(0, 8):
            assert ring.owners(key, n) == full[:n]


def test_owners_rejects_negative_n(Impl):
    with pytest.raises(ValueError):
        Impl([("a", 1)], 1).owners("k", -1)


# ---------------------------------------------------------------------------- edge cases
def test_single_node_owns_everything(Impl):
    ring = Impl([("solo", 1)], 1, 4)
    assert {ring.owner(k) for k in KEYS[:1000]} == {"solo"}
    assert ring.owners("k", 3) == ["solo"]


@pytest.mark.parametrize("members, vnodes", [
    ([], 160),                        # empty membership
    ([("a", 1), ("a", 2)], 160),      # duplicate id
    ([("", 1)], 160),                 # empty id
    ([("a", 0)], 160),                # weight < 1
    ([("a", 1)], 0),                  # vnodes < 1
])
def test_bad_memberships_raise_value_error(Impl, members, vnodes):
    with pytest.raises(ValueError):
        Impl(members, 1, vnodes)


@pytest.mark.parametrize("members", [[(1, 1)], [("a", 1.0)], [("a", "1")]])
def test_bad_member_types_raise_type_error(Impl, members):
    with pytest.raises(TypeError):
        Impl(members, 1)


def test_ring_wrapper_normalises_members_and_rejects_empty():
    assert Ring(["b", "a"], epoch=1).members == {"a": 1, "b": 1}
    assert Ring({"b": 2, "a": 1}, epoch=1).members == {"a": 1, "b": 2}
    for empty in ([], {}, iter(())):
        with pytest.raises(ValueError):
            Ring(empty, epoch=1)
    with pytest.raises(ValueError):
        Ring(["a", "a"], epoch=1)
    with pytest.raises(TypeError):
        Ring("node-a", epoch=1)  # a str is an iterable of one-character ids: refused


def test_ring_point_count_is_bounded_before_allocating():
    with pytest.raises(ValueError):
        Ring({"a": 2**31, "b": 2**31}, epoch=1, vnodes=1)


def test_unicode_and_empty_keys(Impl):
    pairs = [(node, 1) for node in ["ärger", "節点", "node-🚀", "plain"]]
    ring, model = Impl(pairs, 1, 8), ModelRing(pairs, 1, 8)
    keys = ["", "\x00", "a\x00b", "é", "e\u0301", "日本語のチャット", "👋🏽", "\u200b", "a" * 10_000]
    for key in keys:
        assert ring.owner(key) == model.owner(key)
        assert ring.owner(key) in ring.nodes
    # Canonically equal strings are different keys: chat ids are compared as code points.
    assert key_hash("é") != key_hash("e\u0301")


def test_keys_that_are_not_utf8_encodable_or_not_str_are_refused(Impl):
    ring = Impl([("a", 1)], 1)
    with pytest.raises(UnicodeEncodeError):
        ring.owner("\ud800")
    for bad in (b"chat", None, 7):
        with pytest.raises(TypeError):
            ring.owner(bad)


def test_ring_is_the_native_ring_with_its_attributes():
    ring = Ring({"b": 2, "a": 1}, epoch=5, vnodes=10)
    assert isinstance(ring, NativeRing)
    assert (ring.nodes, ring.weights, ring.vnodes, ring.epoch) == (("a", "b"), (1, 2), 10, 5)
    assert repr(ring) == "Ring(nodes=2, points=30, epoch=5)"
    assert Ring(["a"], epoch=1).vnodes == DEFAULT_VNODES
