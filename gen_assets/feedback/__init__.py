"""Feedback: people's ratings of samples, from files in a landing zone to the DuckDB `feedback` table.

- landing.py: the landing zone on disk (incoming/ processed/ failed/), reading and validating rating
  files, `import_file` (the CLI) and `append_ratings` (the web review page); all writes atomic.
- ingest.py:  one transaction per file into `feedback`, refused rows into `quarantine`, then the file
  moves to processed/; the feedback data version (recorded with its exact set of files) and the
  queries the asset checks use.
- pending.py: what the sensor sees (files waiting in incoming/) and its pure decision to request a run.
- events.py:  what people do with served content (impressions, clicks, conversions): event files under
  feedback/events/, ingested into `events` the same way, and the clicks as inverse-propensity weighted
  labels for the reward models (`click_labels`).
"""
