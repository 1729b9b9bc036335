"""Worked and wrong answers for notebooks/11_cluster.ipynb (exercise name -> cell code)."""

ANSWERS = {
    # A quorum queue on 3 nodes needs a majority (2) of live replicas to elect a leader and
    # to confirm a write: (3 - 1) // 2 = 1 node can be down. The check measures it: kill the
    # leader, publishes still confirmed; kill the new leader, the last node confirms nothing.
    "losable": '''\
my_nodes_losable = 1
''',
}

WRONG = {
    "losable": [
        {"mistake": "quorum confused with 'any node alive': 2 of 3 can go",
         "says": "not any one node alive",
         "code": "my_nodes_losable = 2  # one node left still has a copy\n"},
        {"mistake": "the majority (2) counted as the nodes that can be lost",
         "says": "how many must stay up",
         "code": "my_nodes_losable = 3 // 2 + 1  # a majority of 3\n"},
        {"mistake": "a leader loss taken to lose the queue", "says": "does not lose the queue",
         "code": "my_nodes_losable = 0  # the leader holds the queue\n"},
        {"mistake": "every node holds a full copy, so all of them can go",
         "says": "a copy on a dead node serves nobody",
         "code": "my_nodes_losable = 3\n"},
        {"mistake": "half of the nodes, counted as a fraction", "says": "whole number",
         "code": "my_nodes_losable = 3 / 2\n"},
    ],
}
