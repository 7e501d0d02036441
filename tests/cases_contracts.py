"""Shape and value contracts: a plugin whose output has the wrong rows, a shape the
next stage cannot take, non-finite values, or an image release outside [0, 1] makes a `failed` run
with a clear reason; nothing is broadcast into a score. Also a test split of a single class."""
import torch
from PIL import Image

from attackers.adaptive import Adaptive
from attackers.inversion import Inversion
from attackers.transfer import Transfer
from defenses.identity import Identity
from hostile import FOLDER, SMOKE, Case


def smoke(attacker: str = "adaptive") -> tuple:
    args = list(SMOKE)
    args[args.index("--attacker") + 1] = attacker
    return tuple(args)


def patched(cls, attr, fn):
    def setup(tmp, monkeypatch):
        monkeypatch.setattr(cls, attr, fn)
    return setup


def failed(setup, *needles, attacker="adaptive") -> Case:
    return Case(smoke(attacker), needles, setup=setup, outcome="failed")


def _one_class_test_split(tmp, monkeypatch):
    rows = ["file,label,split"]
    for i in range(48):
        test = i >= 40
        label = "a" if test or i % 2 else "b"
        Image.new("L", (8, 8), 200 if label == "a" else 30).save(tmp / "data" / f"{i}.png")
        rows.append(f"{i}.png,{label},{'test' if test else 'train'}")
    (tmp / "data" / "labels.csv").write_text("\n".join(rows) + "\n")


CASES = {
    "release drops a row per batch": failed(patched(Identity, "_release", lambda self, xb: xb[:-1]),
                                            "defense identity released", "rows for"),
    "release adds rows": failed(patched(Identity, "_release", lambda self, xb: torch.cat([xb, xb[:1]])),
                                "defense identity released", "rows for"),
    "release above 1": failed(patched(Identity, "_release", lambda self, xb: xb * 2 + 0.01),
                              "outside [0, 1]"),
    "release below 0": failed(patched(Identity, "_release", lambda self, xb: xb - 0.5), "outside [0, 1]"),
    "release with NaN": failed(patched(Identity, "_release", lambda self, xb: xb * float("nan")), "non-finite"),
    "release with inf": failed(patched(Identity, "_release", lambda self, xb: xb / 0), "non-finite"),
    "image release of another shape": failed(patched(Identity, "_release", lambda self, xb: xb[:, :, :-1]),
                                             "defense identity released rows of shape"),
    "designated logits of too few classes": failed(
        patched(Identity, "_designated", lambda self, rb: self.target_(rb)[:, :2]),
        "designated model of defense identity", "expected (4,)"),
    "designated logits flattened": failed(
        patched(Identity, "_designated", lambda self, rb: self.target_(rb).argmax(1).float()),
        "designated model of defense identity", "shape ()"),
    "attacker predicts a row short": failed(patched(Adaptive, "_predict", lambda self, rb: self.model_(rb)[1:]),
                                            "attacker adaptive predicted", "rows for"),
    "attacker predicts class indices": failed(
        patched(Adaptive, "_predict", lambda self, rb: self.model_(rb).argmax(1).float()),
        "attacker adaptive predicted rows of shape ()"),
    "attacker predicts an extra class": failed(
        patched(Adaptive, "_predict", lambda self, rb: torch.cat([self.model_(rb), self.model_(rb)[:, :1]], 1)),
        "attacker adaptive predicted rows of shape (5,)", "expected (4,)"),
    "attacker predicts inf": failed(patched(Adaptive, "_predict", lambda self, rb: self.model_(rb) / 0),
                                    "attacker adaptive predicted non-finite"),
    "ensemble member short": failed(
        patched(Transfer, "_predict", lambda self, rb: {a: m(rb)[:-1] for a, m in self.models_.items()}),
        "attacker transfer.", "rows for", attacker="transfer"),
    "inversion of another image shape": failed(
        patched(Inversion, "_predict", lambda self, rb: self.decoder_(rb)[:, :, 1:]),
        "attacker inversion predicted rows of shape", attacker="inversion"),
    "test split of a single class": Case(FOLDER, ("single class",), setup=_one_class_test_split, outcome="failed"),
}
