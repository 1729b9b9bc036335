"""Worked and wrong answers for notebooks/05_resilience.ipynb (exercise name -> cell code)."""

ANSWERS = {
    # The service reconnects, on average, half a delay after the broker is back; the
    # unluckiest of many clients has just been refused and waits almost a whole back-off.
    "wait": '''\
my_max_wait_s = outage_s + RECONNECT_S / 2 + BACKOFF_S
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
