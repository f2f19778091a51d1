"""The benchmark tools, by job: quality/ (real data, the rater-style and new-expert proofs, triage, sampling
evidence), speed/ (timings against the anchors, the time-budget planner's word), gpu/ (the prepared check for a
lent GPU machine) and lib/ (what they share). Every tool runs from the repository root by path or with
``python -m benchmarks.<job>.<tool>``; benchmarks/README.md, "Running a tool", says how."""
