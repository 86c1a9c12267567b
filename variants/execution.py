"""Serial stages (the reference's way) or a pipelined run: CPU stages overlap the GPU stages."""

from metrics.fidelity import EXACT
from variants.base import ChoiceVariant


class Execution(ChoiceVariant):
    family = "execution"
    summary = "serial stages, or read/detect/align and restore/write in threads beside the GPU stages"
    field_name = "execution"
    choices = ("serial", "pipelined")
    aliases = {"off": "serial", "false": "serial", "on": "pipelined", "true": "pipelined"}
    tier = EXACT  # the same work on the same data in the same order per stage; only the overlap changes
