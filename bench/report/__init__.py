"""`python -m bench report`: a self-contained static site of one results directory.

`<out>/index.html` holds, per dataset, the headline ranking, the plots and the per-attacker
tables; then the claims-vs-measured table (`bench.claims`) and one provenance row per run. The
plots and the run records are copied beside it (`plots/`, `runs/`), so every link works offline
and the directory can be published as it is: the page loads nothing from the network (inline
CSS, no script; its Content-Security-Policy forbids anything but its own files).

The results directory is only read. The leaderboards are taken from its CSVs when they are there
(the numbers the README quotes), else computed in memory from the run records, never written.
Everything shown comes from records, which are untrusted text: the page is rendered by Jinja2 with
autoescaping, and plots are copied only when they are regular files inside `plots/` (a symlink
could publish any file of the machine).

Modules: `build` (the page), `provenance` (a row and a command per run), `site` (where it is
written, and what a rebuild may touch), `browser` (a screenshot).
"""
