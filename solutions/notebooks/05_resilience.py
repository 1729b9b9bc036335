"""Worked and wrong answers for notebooks/05_resilience.ipynb (exercise name -> cell code)."""

ANSWERS = {
    # On average half of each delay after the broker is back: the middle of the range
    # (outage, outage + RECONNECT_S + BACKOFF_S]. Measured here: the unluckiest client waited
    # 0.8 s after the outage in one run (a quick reconnect), 2 s or more in others.
    "wait": '''\
my_max_wait_s = outage_s + RECONNECT_S / 2 + BACKOFF_S / 2
''',
}

WRONG = {
    "wait": [
        {"mistake": "only the client's back-off, the outage forgotten",
         "says": "the outage alone lasted",
         "code": "my_max_wait_s = BACKOFF_S\n"},
        {"mistake": "the outage alone", "says": "the outage alone lasted",
         "code": "my_max_wait_s = outage_s\n"},
        {"mistake": "the outage and a moment: clients notice at once", "says": "added only",
         "code": "my_max_wait_s = outage_s + 0.1\n"},
        {"mistake": "every delay twice over", "says": "more than the outage +",
         "code": "my_max_wait_s = outage_s + 2 * (RECONNECT_S + BACKOFF_S)\n"},
    ],
}
