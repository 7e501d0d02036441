"""Private-attribute inference: `adaptive` retraining for a task the owner never meant to share."""
from attackers.adaptive import Adaptive


class Attribute(Adaptive):
    name = "attribute"
    description = "fresh model trained on released data to predict a private task (the dataset's private task)"
    knowledge = "gray-box"
    uses_private_task = True
