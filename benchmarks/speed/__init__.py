"""Speed benchmarks: speed.py (its subcommand modules speed_*.py) against the anchors, and the time-budget
planner's word for a whole diffoseg_train (budget_word.py) and its choice on a prepared dataset (budget_replay.py)."""
