"""Speed, measured and never asserted: `python -m harness bench` (run) sets the lab against a
plain-pika drain floor (floor), HTTP intake with wrk (intake), the naive design (versus); plus
the crash bench of notebook 03 (crash) and competing-consumer tools (consumers)."""
