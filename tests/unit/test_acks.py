"""The native ack batch and its twin (tests/reference/acks_model.py) hold the same watermarks
after the same acks, call on_ready once per batch, and raise_all and raise_by_chat merge like
the twin's."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.acks import AckBatch, raise_all, raise_by_chat
from tests.reference import acks_model

ACK = st.tuples(st.sampled_from(["ann", "bob"]), st.sampled_from(["phone", "laptop"]),
                st.sampled_from(["c1", "c2", "g"]), st.integers(0, 2 ** 63 - 1))


@settings(max_examples=300, deadline=None)
@given(turns=st.lists(st.lists(ACK, max_size=12), max_size=5))
def test_native_and_model_batches_agree(turns):
    ready: list[str] = []
    native = AckBatch(lambda: ready.append("native"))
    model = acks_model.AckBatch(lambda: ready.append("model"))
    for acks in turns:
        for ack in acks:
            native.add(*ack)
            model.add(*ack)
        assert native.take() == model.take()
        assert ready.count("native") == ready.count("model") == (len(ready) // 2)
    assert ready.count("native") == sum(1 for acks in turns if acks)


@settings(max_examples=300, deadline=None)
@given(into=st.dictionaries(st.sampled_from("abcde"), st.integers(0, 9)),
       source=st.dictionaries(st.sampled_from("abcde"), st.integers(0, 9)))
def test_raise_all_keeps_the_higher_seq(into, source):
    native, model = dict(into), dict(into)
    raise_all(native, source)
    acks_model.raise_all(model, source)
    assert native == model == {key: max(into.get(key, -1), source.get(key, -1))
                               for key in into.keys() | source.keys()}


@settings(max_examples=300, deadline=None)
@given(into=st.dictionaries(st.tuples(st.sampled_from(["c1", "g"]), st.sampled_from("abc")),
                            st.integers(0, 9)),
       by_chat=st.dictionaries(st.sampled_from(["c1", "c2", "g"]),
                               st.dictionaries(st.sampled_from("abcd"), st.integers(0, 9))))
def test_raise_by_chat_keeps_the_higher_seq_per_chat_and_user(into, by_chat):
    native, model = dict(into), dict(into)
    raise_by_chat(native, by_chat)
    acks_model.raise_by_chat(model, by_chat)
    flat = {(chat, user): seq for chat, users in by_chat.items() for user, seq in users.items()}
    assert native == model == {key: max(into.get(key, -1), flat.get(key, -1))
                               for key in into.keys() | flat.keys()}
