"""diffusers without the integrations the harness never uses through it, in the processes the harness starts for
its own work: a sweep's trial processes, `harness run` and inline sweeps. Importing the harness as a library
leaves diffusers as it is.

diffusers' model base class imports its quantizer registry, which imports bitsandbytes and torchao whenever they
are installed (the `quant` extra installs both; bitsandbytes in turn imports torch's inductor), and its
autoencoders import its LoRA loaders, which import transformers' model classes (transformers is installed for
the Whisper features). In a fresh process that is about 5 s of the 12 s that `from diffusers import
AutoencoderKL` takes on the 2-core CI machine, paid again by every trial process. The harness builds its
models with `from_config` and loads weights with its own strict loader, and the quantization variants call
bitsandbytes, torchao and optimum-quanto directly, so nothing here goes through those integrations."""

from __future__ import annotations

import sys

# diffusers' answers to "is this package installed?", taken when its modules are imported
_UNUSED_INTEGRATIONS = (
    "_bitsandbytes_available",
    "_torchao_available",
    "_optimum_quanto_available",
    "_transformers_available",
)


def skip_unused_diffusers_integrations() -> None:
    """Have diffusers treat bitsandbytes, torchao, optimum-quanto and transformers as absent in this process.

    Call it before anything imports diffusers' model classes; after that their imports are done, and changing
    the answers would only make diffusers' later checks disagree with what it imported, so it does nothing.
    The names are private to diffusers: in a version without them diffusers is simply imported whole."""
    if "diffusers.models.modeling_utils" in sys.modules:
        return
    from diffusers.utils import import_utils

    for flag in _UNUSED_INTEGRATIONS:
        if hasattr(import_utils, flag):
            setattr(import_utils, flag, False)
