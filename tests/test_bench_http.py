"""The wrk driver: its Lua script counts every status, and its result line is parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.bench.intake import lua_string, parse_output, run_wrk, write_script, wrk_path


class _Flaky(BaseHTTPRequestHandler):
    """Answers every third POST 503, the others 201; records the bodies it was sent."""

    seen: list[tuple[str, str, bytes]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.seen.append((self.path, self.headers.get("Content-Type", ""), body))
            status = 503 if len(self.seen) % 3 == 0 else 201
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_wrk_script_posts_the_order_and_reports_non_2xx(tmp_path):
    if wrk_path() is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (.ci/run installs it)")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    order = {"user_id": "u-\"quoted\"]==]", "items": [{"item_id": "item_1", "quantity": 2,
                                                       "price": 1.5}]}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/order"
        result = run_wrk(url, write_script(tmp_path, order), threads=2, connections=4,
                         seconds=1).to_dict()
    finally:
        server.shutdown()
        server.server_close()
    seen = list(_Flaky.seen)
    assert seen and all(p == "/order" and ct == "application/json" for p, ct, _ in seen)
    assert json.loads(seen[0][2]) == order
    # Every answer is counted by its status: the 503s are reported, not folded into a rate.
    assert result["statuses"].get("503", 0) > 0 and result["statuses"].get("201", 0) > 0
    assert result["non_2xx"] == result["statuses"]["503"]
    assert sum(result["statuses"].values()) == result["requests"] <= len(seen)


def test_wrk_result_line_is_parsed_with_every_status():
    out = ("Running 1s test\nWRK_RESULT {\"requests\": 10, \"duration_us\": 2000000, "
           "\"statuses\": {\"201\": 7, \"503\": 3}, \"errors\": {\"connect\": 0, \"read\": 0, "
           "\"write\": 0, \"status\": 3, \"timeout\": 0}, "
           "\"latency_us\": {\"p50\": 1500, \"p99\": 9000, \"max\": 12000}}\n")
    result = parse_output(out, 2, 4).to_dict()
    assert result["requests_s"] == 5.0 and result["ok_2xx_s"] == 3.5
    assert result["non_2xx"] == 3 and result["statuses"] == {"201": 7, "503": 3}
    assert result["latency_ms"]["p99"] == 9.0


def test_lua_string_escapes_anything_that_could_end_the_literal():
    text = 'a"]]\\\n\u00e9]==]'
    lit = lua_string(text)
    assert lit.startswith('"') and lit.endswith('"')
    inner = lit[1:-1]
    assert '"' not in inner and "\n" not in inner and "]" not in inner
    assert inner.replace("\\", "").replace("0", "").isalnum()  # only \ddd escapes and letters


def test_bench_refuses_a_negative_size_before_any_broker_starts(tmp_path):
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "harness", "bench", "--naive-backlog", "-1",
                           "--out", str(tmp_path)], cwd=root, text=True, capture_output=True,
                          timeout=60)
    assert proc.returncode == 2 and "must be 0 or more" in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("flag", "value"), [("--runs", "0"), ("--intake-rounds", "-1")])
def test_bench_refuses_fewer_than_one_run_naming_the_bound(tmp_path, flag, value):
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "harness", "bench", flag, value,
                           "--out", str(tmp_path)], cwd=root, text=True, capture_output=True,
                          timeout=60)
    assert proc.returncode == 2 and f"must be 1 or more, not {value}" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_sides_take_turns_per_shape_first_side_alternating_and_the_median_run_is_kept(
        monkeypatch, tmp_path):
    from harness.bench import intake

    calls: list[tuple[str, int]] = []
    rates = iter([100.0, 50.0, 300.0, 10.0, 200.0, 20.0] * 10)

    def fake_wrk(url: str, _script: Path, *, threads: int, connections: int,
                 seconds: float) -> intake.WrkResult:
        calls.append((url, connections))
        n = int(next(rates) * seconds)
        return intake.WrkResult(threads, connections, seconds, n, {"201": n}, {}, {})

    monkeypatch.setattr(intake, "run_wrk", fake_wrk)
    settled: list[str] = []
    out = intake.in_turn({"a": "A", "b": "B"}, tmp_path / "s.lua", seconds=1, rounds=3,
                         shapes=((1, 1), (2, 4)), before_run=settled.append)
    # Per shape, both sides in turn; the side that goes first alternates by round.
    assert calls == [("A", 1), ("B", 1), ("A", 4), ("B", 4),
                     ("B", 1), ("A", 1), ("B", 4), ("A", 4),
                     ("A", 1), ("B", 1), ("A", 4), ("B", 4)]
    assert settled == [url.lower() for url, _ in calls]
    for side in ("a", "b"):
        assert out[side]["rounds"] == 3
        for run, every in zip(out[side]["runs"], out[side]["every_run"], strict=True):
            rates_seen = sorted(r["ok_2xx_s"] for r in every)
            assert len(every) == 3 and run in every and run["ok_2xx_s"] == rates_seen[1]
    with pytest.raises(ValueError, match="rounds"):
        intake.in_turn({"a": "A"}, tmp_path / "s.lua", seconds=1, rounds=0)


def test_a_non_2xx_answer_in_any_run_is_reported_not_only_the_median_runs():
    from harness.bench.intake import non_2xx_in_any_run

    def run(statuses: dict[str, int]) -> dict:
        return {"requests": sum(statuses.values()), "statuses": statuses}

    clean = {"every_run": [[run({"201": 10}), run({"201": 12})], [run({"201": 30})]]}
    assert non_2xx_in_any_run(clean) is None
    # The 500 is in a run that is not the median one of its shape: it is still reported.
    once = {"every_run": [[run({"201": 10}), run({"201": 11, "500": 1}), run({"201": 12})],
                          [run({"201": 30, "503": 2})]]}
    assert non_2xx_in_any_run(once) == "3 non-2xx answer(s) of 66 over all runs: 500: 1, 503: 2"
