"""Chaos: a seeded fault schedule (schedule), carried out against a running lab (inject), with
hostile messages (messages), judged by a checker that can say no (check) and charted (plots).
The scenario that puts them together is `harness.scenarios.chaos`."""
