"""bench/ordercheck.py: what the exactly-once check counts, and what it lets pass."""
from bench.ordercheck import InOrder


def stream(*ks: int) -> InOrder:
    check = InOrder()
    for k in ks:
        check.see(k)
    return check


def test_in_order_stream_has_no_anomaly():
    check = stream(0, 1, 2, 3)
    assert (check.delivered, check.anomalies, check.late) == (4, 0, [])


def test_a_late_message_is_an_anomaly_unless_its_sender_retried_it():
    check = stream(0, 2, 3, 1)
    assert check.late == [1] and not check.gaps
    assert check.anomalies == 1
    assert check.unexplained({1}) == 0
    assert check.unexplained({2}) == 1  # a retry of another message explains nothing here


def test_duplicates_and_unfilled_gaps_are_anomalies_even_when_retried():
    assert stream(0, 1, 1).unexplained({1}) == 1
    skipped = stream(0, 3)
    assert skipped.gaps == {1, 2} and skipped.unexplained({1, 2}) == 2


def test_a_late_message_delivered_twice_counts_its_second_copy():
    check = stream(0, 2, 1, 1)
    assert check.unexplained({1}) == 1 and check.duplicates == 1
