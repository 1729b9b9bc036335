"""Worked and wrong answers for notebooks/01_baseline.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "slower": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS  # queues, hops, confirms
my_medians = {
    "end_to_end_ms": EX_WORK_MS + overhead_ms,
    "http_ms": slow.summary["http_ms"]["p50"],  # the HTTP answer never waited for the work
}
''',
}

WRONG = {
    # (Not "the HTTP time doubles": the HTTP medians of two runs of 20 orders differed by 65 %
    # on a busy 2-core machine, so twice the first run's median can land within the stated
    # 50 % of the second's. Only a tolerance wider than that noise would reject it, and it
    # would then reject right answers too.)
    "slower": [
        {"mistake": 'the HTTP answer waits for the kitchen', "says": "does not wait for the inventory's work",
         "code": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS
my_medians = {"end_to_end_ms": EX_WORK_MS + overhead_ms, "http_ms": EX_WORK_MS + slow.summary["http_ms"]["p50"]}
'''},
        {"mistake": 'the HTTP answer takes no time at all', "says": 'cannot be 0 ms',
         "code": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS
my_medians = {"end_to_end_ms": EX_WORK_MS + overhead_ms, "http_ms": 0}
'''},
        {"mistake": 'end to end is the work alone', "says": 'no more than the work alone',
         "code": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS
my_medians = {"end_to_end_ms": EX_WORK_MS, "http_ms": slow.summary["http_ms"]["p50"]}
'''},
        {"mistake": 'end to end unchanged from the slow run', "says": 'no more than the work alone',
         "code": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS
my_medians = {"end_to_end_ms": slow.summary["latency_ms"]["p50"], "http_ms": slow.summary["http_ms"]["p50"]}
'''},
        {"mistake": "the new work added on top of the slow run's end to end (its work counted too)",
         "says": "end to end off by",
         "code": '''\
my_medians = {"end_to_end_ms": slow.summary["latency_ms"]["p50"] + EX_WORK_MS,
              "http_ms": slow.summary["http_ms"]["p50"]}
'''},
    ],
}
