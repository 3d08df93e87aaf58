"""The toy demo's recipe: how `lamp demo` and `lamp bench toy` learn and sample a toy motion.

Plain constants (no imports), so the CLI can show them as defaults without loading torch. Why each
value is what it is: docs/toy.md, "Why the content did not stay".
"""

# Toy-scale training: the paper's lr (3e-5) is for SD's 860 M-parameter UNet and 10 000 steps; the
# toy UNet's motion layers learn a slide in a few hundred steps at a higher rate. 800 steps: the
# path error falls with every 200 more up to there (docs/toy.md, "The path"); `lamp bench toy`
# measures the recipe at 800 (mean path error under 3 px for every default motion over 3 seeds).
TRAIN_STEPS = 800
# `lamp demo` stops at 600 so that the whole command stays within 5 minutes on 2 CPU cores
# (800 steps took 4 m 55 s there); its own video meets the bars at 600 (docs/toy.md).
DEMO_TRAIN_STEPS = 600
LR = 1e-3
SAMPLE_STEPS = 25
GUIDANCE = 5.0
CLIPS = 8
# The clips show their shapes upright, as the toy base draws them: motion layers tuned on shapes
# turned at random pull every frame after the first towards a turned, i.e. rounded, average.
CLIPS_UPRIGHT = True
CLIPS_RADIUS = (7.0, 11.0)
# The motion layers learn on noise levels t >= this only: the motion of frames 2.. is decided at
# high noise, and the last, low-noise steps draw each frame's detail from frame 1.
MIN_TIMESTEP = 200
FRAMES = 16
