"""core/nodesets.py: the compact key -> nodes map says the same as a plain dict of sets under
any sequence of adds, discards and forgotten nodes, and holds a set only for keys on several
nodes."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switchboard.core import nodesets

KEYS = st.sampled_from(["alice", "bob", "carol"])
NODES = st.sampled_from(["a", "b", "c"])
OPS = st.lists(st.tuples(st.sampled_from(["add", "discard", "forget"]), KEYS, NODES),
               max_size=60)


@given(OPS)
def test_agrees_with_a_dict_of_sets(ops):
    compact: dict[str, nodesets.NodeSet] = {}
    model: dict[str, set[str]] = {}
    for op, key, node in ops:
        if op == "add":
            nodesets.add(compact, key, node)
            model.setdefault(key, set()).add(node)
        elif op == "discard":
            nodesets.discard(compact, key, node)
            model.get(key, set()).discard(node)
        else:
            dropped = nodesets.forget(compact, node)
            assert sorted(dropped) == sorted(k for k, nodes in model.items() if node in nodes)
            for nodes in model.values():
                nodes.discard(node)
        model = {k: nodes for k, nodes in model.items() if nodes}
        assert {k: set(nodesets.members(v)) for k, v in compact.items()} == model
        assert all(isinstance(v, str) for k, v in compact.items() if len(model[k]) == 1)


def test_one_node_is_its_shared_name():
    compact: dict[str, nodesets.NodeSet] = {}
    node = "gateway-7"
    nodesets.add(compact, "alice", node)
    nodesets.add(compact, "bob", node)
    assert compact["alice"] is node and compact["bob"] is node
    assert list(nodesets.members(compact.get("carol"))) == []
