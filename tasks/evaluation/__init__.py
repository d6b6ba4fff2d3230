"""Scenario suite: planted worlds in vendor formats, replayed night by night through the real
pipeline, with the decisions scored against each world's truth manifest (`make evaluate`).

- worlds.py: the generator (PostHog JSON lines, Zendesk cursor-export pages, GitHub issue-list
  pages per day, a features.yaml and truth.json per world)
- replay.py: the night-by-night replay through the pipeline steps
- metrics.py: recall@k, right kind, detection latency, false alarms, flaps, one issue per problem
- suite.py: run worlds (in parallel processes), write the report, check the targets
"""
