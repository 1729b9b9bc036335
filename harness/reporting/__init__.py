"""What a run leaves behind: the scenario result and its run folder (results), the charts
(plots) and the queueing model the charts are compared with (model)."""
