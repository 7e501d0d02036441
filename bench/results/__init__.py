"""Results, in layers: `records` (one run's JSON), then `tables` and `headline` built from records,
then `leaderboards` (the CSV files). Each module imports only those before it; see docs/design.md."""
