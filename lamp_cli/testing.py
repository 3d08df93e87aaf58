"""For tests and scripts only (no product module imports this): the builders of random models,
re-exported from where they live (`lamp_cli.models.tiny`, `lamp_cli.bench.sd1`)."""

from .bench.sd1 import *  # noqa: F401,F403
from .bench.sd1 import (  # noqa: F401
    SD1_RANDOM_SPEC,
    SD1_UNET_CONFIG,
    random_sd1_base,
    random_sd1_components,
    random_sd1_unet,
)
from .models.tiny import *  # noqa: F401,F403
from .models.tiny import (  # noqa: F401
    DEFAULT_WORDS,
    SD_SCHEDULER_CONFIG,
    TINY_TEXT_CONFIG,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    save_components,
    save_tiny_base,
    save_tiny_clip,
    tiny_components,
    tiny_text_encoder,
    tiny_tokenizer,
)
