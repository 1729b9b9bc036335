"""Worked and wrong answers for notebooks/06_queueing_model.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "rush": '''\
my_rush = {
    "drain_s": RUSH_BACKLOG / (mu - RUSH_RATE),  # it shrinks by μ − λ per second
    # c consumers shrink it by c·μ − λ: need c·μ − λ >= backlog / target
    "consumers": math.ceil((RUSH_BACKLOG / TARGET_S + RUSH_RATE) / mu),
}
''',
}

WRONG = {
    "rush": [
        {"mistake": 'forgets the orders that keep arriving during the drain', "says": 'new orders keep arriving',
         "code": '''\
my_rush = {
    "drain_s": RUSH_BACKLOG / mu,
    "consumers": math.ceil((RUSH_BACKLOG / TARGET_S + RUSH_RATE) / mu),
}
'''},
        {"mistake": 'consumers for the backlog alone, not the arrivals on top', "says": 'too few',
         "code": '''\
my_rush = {
    "drain_s": RUSH_BACKLOG / (mu - RUSH_RATE),
    "consumers": math.ceil(RUSH_BACKLOG / TARGET_S / mu),
}
'''},
        {"mistake": 'one consumer more, to be safe', "says": 'would do',
         "code": '''\
my_rush = {
    "drain_s": RUSH_BACKLOG / (mu - RUSH_RATE),
    "consumers": math.ceil((RUSH_BACKLOG / TARGET_S + RUSH_RATE) / mu) + 1,
}
'''},
    ],
}
