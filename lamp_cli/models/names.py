"""Parameter-name patterns of the modules LAMP adds to a 2-D UNet (no torch: the base's
fingerprint, adapters and official imports all read them)."""

# What the inflation adds: the temporal conv and its gate, temporal attention and its norm.
ADDED_MODULES = ("conv1d", "conv_gate", "attn_temp", "norm_temp")

# A tuned base weight (`attn1.to_q`) is stored in an adapter as `<parameter>.delta`: tuned - base.
DELTA_SUFFIX = ".delta"

# model_index.json of a diffusers folder holding an SD-1.x-architecture base (what lamp writes).
SD_PIPELINE_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}
