"""`make drill`: a reproducible robustness and privacy drill of the nightly pipeline.

`python -m benchmarks.drill [--jobs N] [--only crash,faults,inputs,settings,secrets] [--quick]`
attacks the pipeline (SIGKILL at seeded kill points, faulty vendor APIs, a corpus of bad input
files, bad settings, planted secrets and PII), runs every trial in its own temp dir and child
process, and writes a figures table to data/drill/report.md. The drill measures whatever code is
on the branch; it never fixes anything.
"""
