"""`bench compare`: did it help? Two leaderboards, or two configurations of one, cell by cell.

A *cell* is one attacker (with its settings) on one attack task, on one dataset under one setup
(designated task, model architecture, preset, evaluation split). The designated model's
utility is a cell of its own, so a comparison shows what a defense costs next to what it hides.

Each side is a long-format leaderboard: a `leaderboard.csv`, or the run records of a results
directory. Without a selection the two sides are matched configuration by configuration (a
rerun against the committed results); with `--a`/`--b` each side is narrowed to one
configuration per dataset and the two are matched cell by cell. For every matched cell and
metric the report gives both means with their 95 % CIs and seed counts, the difference and
whether the CIs are disjoint; cells on one side only are listed, never dropped.

Datasets are told apart by content, not by name (two `folder` directories are both `folder`):
a run record holds the digest of the data its seed used (`data_digest`), and two cells whose
runs of one seed used different data are kept apart and listed. A leaderboard CSV carries no
digest: it is read from the records in the `runs/` directory beside the CSV, where there is one.

Modules: `sides` (reading and narrowing each side), `cells` (matching and the statistics), `text`
(the report), `command` (the CLI entry).
"""
