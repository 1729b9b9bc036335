"""Worked and wrong answers for notebooks/02_backlog_drain.ipynb (exercise name -> cell code)."""

ANSWERS = {
    # 3 ms of work against a round trip of a few ms per order at prefetch 1: measured
    # 3.0x to 3.2x here; 50 in flight do not make it 50 times faster, since each order
    # still takes its 3 ms of work, one after another.
    "prefetch": '''\
my_prefetch_effect = "faster, but well under 10 times"
''',
}

WRONG = {
    # The measured speed-up decides; these two are far from the 3x measured here.
    "prefetch": [
        {"mistake": 'what the zero-work run suggests: the window does not matter', "says": 'orders/s at prefetch 1',
         "code": '''\
my_prefetch_effect = "no faster"
'''},
        {"mistake": '50 in flight means 50 times as fast', "says": 'orders/s at prefetch 1',
         "code": '''\
my_prefetch_effect = "10 times or more: it has 50 orders at once"
'''},
        {"mistake": 'not one of the choices', "says": 'pick one of',
         "code": '''\
my_prefetch_effect = "a bit faster"
'''},
    ],
}
