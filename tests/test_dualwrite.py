"""The dual-write experiment (harness.course.dualwrite) on a real broker: the crash between
publishing and storing makes a ghost and a duplicate per client under `direct`, and nothing under
`outbox`. `direct` is the deliberately broken configuration that shows the counts can fail.
"""

from __future__ import annotations

import pytest

from harness.course import dualwrite

CLIENTS = 3


@pytest.mark.broker
@pytest.mark.slow
def test_direct_makes_ghosts_and_duplicates_and_the_outbox_none(lab):
    direct = dualwrite.crash_mid_order(lab, "direct", CLIENTS)
    assert direct.published_before_crash == CLIENTS
    assert all(a.startswith("no answer") for a in direct.answers_before_crash)
    assert direct.counts() == {"ghosts": CLIENTS, "lost": 0, "duplicates": CLIENTS}
    assert direct.processed == 2 * CLIENTS

    outbox = dualwrite.crash_mid_order(lab, "outbox", CLIENTS)
    assert outbox.published_before_crash == 0
    assert outbox.counts() == {"ghosts": 0, "lost": 0, "duplicates": 0}
    assert outbox.processed == outbox.accepted == CLIENTS


def test_unknown_design_is_refused():
    with pytest.raises(ValueError, match="design must be one of"):
        dualwrite.crash_mid_order(None, "store-first")  # type: ignore[arg-type]
