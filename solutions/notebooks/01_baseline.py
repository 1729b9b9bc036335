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
    # Believes the HTTP answer waits for the kitchen.
    "slower": '''\
overhead_ms = slow.summary["latency_ms"]["p50"] - SLOW_WORK_MS
my_medians = {
    "end_to_end_ms": EX_WORK_MS + overhead_ms,
    "http_ms": EX_WORK_MS + slow.summary["http_ms"]["p50"],
}
''',
}
