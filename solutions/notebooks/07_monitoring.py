"""Worked and wrong answers for notebooks/07_monitoring.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "stats": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    stats = q.get("message_stats", {})
    return {
        "ready": q.get("messages_ready", 0),
        "unacked": q.get("messages_unacknowledged", 0),
        "consumers": q.get("consumers", 0),
        "publish_rate": stats.get("publish_details", {}).get("rate", 0.0),
        "ack_rate": stats.get("ack_details", {}).get("rate", 0.0),
    }
''',
    "alert": '''\
def alert(stats):
    # Work waiting and nobody taking it, or arriving faster than it is acked.
    waiting = stats["ready"] >= 10
    return waiting and (stats["consumers"] == 0 or stats["ack_rate"] < stats["publish_rate"])
''',
}

WRONG = {
    "stats": [
        {"mistake": "ready is q['messages'] (ready + unacked)", "says": 'is ready + unacked',
         "code": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    stats = q.get("message_stats", {})
    return {
        "ready": q["messages"],
        "unacked": q.get("messages_unacknowledged", 0),
        "consumers": q.get("consumers", 0),
        "publish_rate": stats.get("publish_details", {}).get("rate", 0.0),
        "ack_rate": stats.get("ack_details", {}).get("rate", 0.0),
    }
'''},
        {"mistake": "unacked is everything minus nothing: q['messages']", "says": 'but a consumer holds',
         "code": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    stats = q.get("message_stats", {})
    return {
        "ready": q.get("messages_ready", 0),
        "unacked": q["messages"],
        "consumers": q.get("consumers", 0),
        "publish_rate": stats.get("publish_details", {}).get("rate", 0.0),
        "ack_rate": stats.get("ack_details", {}).get("rate", 0.0),
    }
'''},
        {"mistake": 'crashes on a quiet queue: message_stats read with []', "says": 'raised KeyError',
         "code": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    stats = q["message_stats"]
    return {
        "ready": q.get("messages_ready", 0),
        "unacked": q.get("messages_unacknowledged", 0),
        "consumers": q.get("consumers", 0),
        "publish_rate": stats["publish_details"]["rate"],
        "ack_rate": stats["ack_details"]["rate"],
    }
'''},
        {"mistake": "a quiet queue's rates read as missing fields", "says": 'raised KeyError',
         "code": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    stats = q.get("message_stats", {})
    return {
        "ready": q.get("messages_ready", 0),
        "unacked": q.get("messages_unacknowledged", 0),
        "consumers": q.get("consumers", 0),
        "publish_rate": stats["publish_details"]["rate"],
        "ack_rate": stats["ack_details"]["rate"],
    }
'''},
    ],
    "alert": [
        {"mistake": 'any message ready pages (ready > 0): it fires on normal work', "says": 'kept up',
         "code": '''\
def alert(stats):
    return stats["ready"] > 0
'''},
        {"mistake": 'a depth threshold too high to fire in time (ready > 50)', "says": 'never fired',
         "code": '''\
def alert(stats):
    return stats["ready"] > 50
'''},
        {"mistake": 'a threshold so high that no backlog reaches it', "says": 'never fired',
         "code": '''\
def alert(stats):
    return stats["ready"] > 10_000
'''},
        {"mistake": 'no consumer alone, with or without work waiting', "says": 'nothing was waiting',
         "code": '''\
def alert(stats):
    return stats["consumers"] == 0
'''},
        {"mistake": 'a rule that always pages', "says": 'at rest',
         "code": '''\
def alert(stats):
    return True
'''},
        {"mistake": 'publish rate above ack rate alone (the rates lag, and a quiet queue has none)', "says": 'never fired',
         "code": '''\
def alert(stats):
    return stats["publish_rate"] > stats["ack_rate"] + 50
'''},
    ],
}

# Right answers other than the worked one, which the check must accept too.
ALSO_RIGHT = {
    "alert": [
        {"answer": "work waiting and no consumer at all",
         "code": '''\
def alert(stats):
    return stats["ready"] > 0 and stats["consumers"] == 0
'''},
    ],
}
