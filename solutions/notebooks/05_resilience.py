"""Worked and wrong answers for notebooks/05_resilience.ipynb (exercise name -> cell code)."""

ANSWERS = {
    # On average half of each delay after the broker is back.
    "wait": '''\
my_max_wait_s = outage_s + RECONNECT_S / 2 + BACKOFF_S / 2
''',
}

WRONG = {
    # Forgets the outage itself: only the client's back-off.
    "wait": '''\
my_max_wait_s = BACKOFF_S
''',
}
