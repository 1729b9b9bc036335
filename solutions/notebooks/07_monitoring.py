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
    # Reads the total (ready + unacked) as "ready", and crashes on a quiet queue's stats.
    "stats": '''\
def queue_stats(name):
    q = requests.get(f"{API}/queues/{VHOST}/{name}", auth=AUTH, timeout=5).json()
    return {"ready": q["messages"] + 1, "unacked": q["messages_unacknowledged"],
            "consumers": q["consumers"], "publish_rate": 0.0, "ack_rate": 0.0}
''',
    # A threshold so high that the backlog never reaches it.
    "alert": '''\
def alert(stats):
    return stats["ready"] > 10_000
''',
}
