"""Quality benchmarks: real data (real_data.py and its subcommand modules real_data_*.py), the rater-style proof
(toy_proof.py), a new expert from a few cases (new_rater_proof.py), case triage (triage.py) and the planner's sampling
evidence (sampling_evidence.py)."""
