"""`wait_until` of the test environment: what its timeout error tells whoever reads a failed test."""

from __future__ import annotations

import pytest
from posttrain.testenv import wait_until


def test_the_timeout_error_shows_the_state_at_the_deadline_not_at_the_call() -> None:
    # A state formatted into `message` is the one before the wait: "Running" although the resource may
    # have moved on. `state` is read when the wait gives up.
    phase = {"now": "Waiting"}

    def check() -> bool:
        phase["now"] = "Running"  # it moved on while waited for, and never got to Succeeded
        return False

    with pytest.raises(TimeoutError) as timed_out:
        wait_until(check, timeout=0, interval=0, message="the stage to succeed", state=lambda: phase["now"])
    assert (
        str(timed_out.value)
        == "timed out after 0s waiting for the stage to succeed; at the deadline: Running"
    )


def test_without_a_state_the_error_names_what_was_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"^timed out after 0s waiting for the teachers removed$"):
        wait_until(lambda: None, timeout=0, interval=0, message="the teachers removed")


def test_a_truthy_result_is_returned_and_the_state_is_not_read() -> None:
    def state() -> str:
        raise AssertionError("read although the wait succeeded")

    assert wait_until(lambda: [1], timeout=0, state=state) == [1]
