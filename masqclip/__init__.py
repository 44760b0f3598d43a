"""masqclip: MasQCLIP (ICCV 2023) open-vocabulary universal segmentation as a reproducible pipeline."""
__version__ = "0.1.0"

# Version of the code's training and data semantics. Part of every trained model's signature in the
# workflow (masqclip.pipeline), so a model trained by older code is never reused, not even from the
# cache shared between checkouts. Bump it with any change that alters what training produces from
# the same config and data: losses, label assignment, selection rules, data generation or loading.
# 2: smoothed-dice distillation selection, nearest-resized MasQ-Tuning labels and the class-weighted
#    MasQ-Tuning loss, random new query projections.
BEHAVIOUR_VERSION = 2
