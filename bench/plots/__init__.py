"""Figures written after every run and by `python -m bench plot`.

- tradeoff.png: utility vs worst-case leakage, one point per defense configuration
  (error bars: 95 % CI of the worst attacker), one panel per dataset, with the headline's utility
  floor (floor x clean accuracy) as a dotted line and a utility axis at least 0.1 wide;
- attackers-<dataset>.png: one panel per attacker, one row per defense configuration: its
  leakage with the 95 % CI (with no defense run on the dataset: the attacker's accuracy, SSIM
  for inversion, against chance); a CI far wider than the spread of the points runs off the panel;
- grid-<dataset>.png: original / released / inverted test images per defense configuration;
- sweep-<dataset>-<defense>-<param>.png: for a defense run at several values of one numeric
  hyperparameter (all else equal, e.g. `--set arl.lam=0,0.1,1`), utility and each attack
  against that value, with the no-defense and chance levels for reference;
- budget-<dataset>.png: for attackers run at three or more budgets, leakage against the number of
  labelled released images the attacker learnt from, one panel per attacker.

A cell of a weak attacker (`weak_attacker`: the tables keep it out of every worst case) or with an
undefined value is drawn apart, grey and hollow, and never sets an axis's range: inside the range it
sits at its value, outside it an arrow at the edge carries the value written beside it.

Readable however many configurations and attackers the results hold: every figure is small
multiples wrapped into rows of a few panels, with legends beside the axes, or below them once they
hold more than ten entries (never over the data), and is at most MAX_SIDE_PX pixels on its long
side. Attacker panels or image rows beyond what fits go on further pages (`attackers-<dataset>-p2.png`, `budget-<dataset>-p2.png`,
`grid-<dataset>-p2.png`, ...).
A configuration is named by its label in the tables (`params.label_book`: what differs from the
defaults it first ran under, with human values: `fmd(eps=8/255) [500 released]`); a defense has the same colour in every
figure, its configurations shades of it, each with its own marker.

One module per figure family (`tradeoff`, `attackers`, `grids`, `budget`, `sweeps`), on `style`
and `files`; `write.write_plots` draws them all. Every file name is made in `files.plot_path`.
"""
import matplotlib

# Before any submodule imports pyplot: figures are written to files, never shown.
matplotlib.use("Agg")
