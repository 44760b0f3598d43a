"""Every configuration key, with its default and meaning, in detectron2's names.

Official Mask2Former / MasQCLIP YAML files load into this tree unchanged (their ``eval`` tags
aside, see ``config.py``). Keys that are ours, not detectron2's or Mask2Former's, are marked
"(masqclip)". Bump ``VERSION`` when a key changes meaning. Keys accepted for compatibility but
never read are listed, with the reason, in ``IGNORED_KEYS`` at the end of this file.
"""
from .config import CfgNode as CN

_C = CN()
_C.VERSION = 2

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "MaskFormer"  # MaskFormer (teacher) | MaskDistill (student) | MasQTuning
_C.MODEL.DEVICE = "auto"  # auto -> cuda when available, else cpu
_C.MODEL.WEIGHTS = ""  # checkpoint to load: .pth (detectron2 / ours), .pkl (d2 model zoo), torchvision://resnet50
_C.MODEL.MASK_ON = False
_C.MODEL.LOAD_PROPOSALS = False
_C.MODEL.KEYPOINT_ON = False
# Per-channel mean/std of the network input, in the order of INPUT.FORMAT, on the 0-255 scale.
_C.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
_C.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
_C.MODEL.BACKBONE.FREEZE_AT = 0  # 0: train everything; 1: freeze stem; k: freeze stem + res2..res(k)

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34 (basic blocks), 50, 101, 152 (bottleneck)
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.NORM = "FrozenBN"  # FrozenBN | BN | SyncBN | GN | ""
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False  # False: torchvision/Mask2Former style (stride in the 3x3)
_C.MODEL.RESNETS.RES5_DILATION = 1
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # must be 64 for R18/R34
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
_C.MODEL.RESNETS.STEM_TYPE = "basic"
_C.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1

_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
# Teachers/students: 1 (class-agnostic). MasQ-Tuning: vocabulary size; it only sizes
# criterion.empty_weight, the decoder's class head always has 2 outputs (object, no-object).
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
_C.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
_C.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
# --- (masqclip) mask generator network keys: values Mask2Former hard-codes ---
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024  # FFN width of the deformable encoder
# --- end (masqclip) mask generator network keys ---

_C.MODEL.MASK_FORMER = CN()
_C.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
_C.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
_C.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
_C.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
_C.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
_C.MODEL.MASK_FORMER.MASK_WEIGHT = 5.0
_C.MODEL.MASK_FORMER.DICE_WEIGHT = 5.0
_C.MODEL.MASK_FORMER.HIDDEN_DIM = 256
_C.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
_C.MODEL.MASK_FORMER.NHEADS = 8
_C.MODEL.MASK_FORMER.DROPOUT = 0.0
_C.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
_C.MODEL.MASK_FORMER.ENC_LAYERS = 0
_C.MODEL.MASK_FORMER.DEC_LAYERS = 10  # 9 masked-attention layers + the learnable-query prediction
_C.MODEL.MASK_FORMER.PRE_NORM = False
_C.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
_C.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
_C.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
_C.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
_C.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
_C.MODEL.MASK_FORMER.TEST = CN()
_C.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
_C.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
_C.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
_C.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.8
_C.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.8
_C.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

# Swin backbone keys: accepted so Mask2Former's Swin configs parse; no Swin backbone is built here
# (IGNORED_KEYS).
_C.MODEL.SWIN = CN()
_C.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
_C.MODEL.SWIN.PATCH_SIZE = 4
_C.MODEL.SWIN.EMBED_DIM = 96
_C.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
_C.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
_C.MODEL.SWIN.WINDOW_SIZE = 7
_C.MODEL.SWIN.MLP_RATIO = 4.0
_C.MODEL.SWIN.QKV_BIAS = True
_C.MODEL.SWIN.QK_SCALE = None
_C.MODEL.SWIN.DROP_RATE = 0.0
_C.MODEL.SWIN.ATTN_DROP_RATE = 0.0
_C.MODEL.SWIN.DROP_PATH_RATE = 0.3
_C.MODEL.SWIN.APE = False
_C.MODEL.SWIN.PATCH_NORM = True
_C.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.SWIN.USE_CHECKPOINT = False

# MasQCLIP. SCORE_THRESHOLD / NMS_THRESHOLD are the official names of the distillation alpha / beta.
_C.MODEL.MASQ_CLIP = CN()
# open_clip architecture name, as the official one-element list; a bare string is accepted too, and
# OpenAI-style names ("ViT-L/14@336px") are mapped to open_clip's ("ViT-L-14-336"). OpenAI's weights
# need QuickGELU: name open_clip's "-quickgelu" architecture (a local OpenAI weights file under a
# plain-GELU name is refused; the "openai" tag sets QuickGELU itself).
_C.MODEL.MASQ_CLIP.MODEL_NAME = ["ViT-L-14-336-quickgelu"]
_C.MODEL.MASQ_CLIP.PRETRAINED = "openai"  # (masqclip) open_clip tag, a local checkpoint path, or "" = random
_C.MODEL.MASQ_CLIP.SCORE_THRESHOLD = 0.8  # distillation: keep teacher masks with score > alpha
_C.MODEL.MASQ_CLIP.NMS_THRESHOLD = 0.1  # distillation: max dice with GT < beta; dice-NMS at beta
_C.MODEL.MASQ_CLIP.LABEL_DICE_THRESHOLD = 0.6  # (masqclip) MasQ-Tuning label assignment
# MasQ-Tuning's loss = MASK_FORMER.CLASS_WEIGHT x NLL with class weights 1 and, for "background",
# MASK_FORMER.NO_OBJECT_WEIGHT (the official recipe: 2.0 and 0.1).
_C.MODEL.MASQ_CLIP.LOGIT_SCALE = 100.0  # (masqclip) multiplies cosine similarities; <= 0: the CLIP's learned scale
_C.MODEL.MASQ_CLIP.TUNING = True  # (masqclip) False = frozen baseline: mask tokens use CLIP's own q proj
# (masqclip) initial new query projections: "random" (nn.Linear's default init, the official recipe)
# or "copy" (each starts as its layer's CLIP q projection)
_C.MODEL.MASQ_CLIP.NEW_Q_INIT = "random"
_C.MODEL.MASQ_CLIP.USE_OBJECT_SCORE = True  # (masqclip) fuse log p_obj with CLIP log-probs
_C.MODEL.MASQ_CLIP.VOCABULARY = []  # (masqclip) class names ("cat; kitty, dog" style); [] = dataset's
_C.MODEL.MASQ_CLIP.TEXT_CACHE_DIR = ""  # (masqclip) "" = $MASQCLIP_CACHE or ~/.cache/masqclip/text
_C.MODEL.MASQ_CLIP.TRAIN_MASK_SIZE = 336  # (masqclip) GT/pred masks resized to this for label assignment

# (masqclip) Progressive distillation: the student's frozen teacher.
_C.MODEL.DISTILL = CN()
_C.MODEL.DISTILL.TEACHER_WEIGHTS = ""  # "" = MODEL.WEIGHTS (the student starts from its teacher)

# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"
_C.INPUT.FORMAT = "RGB"
_C.INPUT.MASK_FORMAT = "polygon"
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = False
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
_C.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
_C.INPUT.DATASET_MAPPER_NAME = "coco_instance_lsj"
_C.INPUT.COLOR_AUG_SSD = False
_C.INPUT.SIZE_DIVISIBILITY = -1
# Large-scale jitter
_C.INPUT.IMAGE_SIZE = 1024
_C.INPUT.MIN_SCALE = 0.1
_C.INPUT.MAX_SCALE = 2.0
# (masqclip) LSJ padding (masqclip/data/transforms.py, mapper.py): where the LSJ crop window extends
# past the resized image, the image is filled with this value (detectron2 FixedSizeCrop's default),
# instance masks with 0 and sem_seg with MODEL.SEM_SEG_HEAD.IGNORE_VALUE.
_C.INPUT.LSJ_PAD_VALUE = 128.0

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.PROPOSAL_FILES_TEST = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "ADAMW"
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # | WarmupPolyLR | WarmupCosineLR
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.0001
_C.SOLVER.BASE_LR_END = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.05
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.WEIGHT_DECAY_EMBED = 0.0
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.BACKBONE_MULTIPLIER = 0.1
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (30000,)
_C.SOLVER.WARMUP_FACTOR = 1.0
_C.SOLVER.WARMUP_ITERS = 10
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.POLY_LR_POWER = 0.9
_C.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.CHECKPOINTS_TO_KEEP = 2  # (masqclip) periodic checkpoints kept besides model_final.pth
_C.SOLVER.IMS_PER_BATCH = 16
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = True
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # full_model | value | norm
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN()
# Mixed precision (masqclip/utils/precision.py). CUDA: fp16 with a gradient scaler, or bf16 where
# the GPU supports it. CPU: bf16 only where the CPU has native bf16 matrix units (Intel AMX), else fp32
# with a notice. Matching costs, point-sampled BCE/dice and CLIP logits always stay fp32.
_C.SOLVER.AMP.ENABLED = False  # as detectron2; the official (and our R50) configs set True
_C.SOLVER.AMP.PRECISION = "auto"  # (masqclip) auto | fp16 | bf16; auto = bf16 where supported, else fp16 (CUDA)
# (masqclip) engine: progress logging and data parallelism.
_C.SOLVER.LOG_PERIOD = 20  # (masqclip) iterations between metric rows / log lines
_C.SOLVER.LOG_SECONDS = 60.0  # (masqclip) also write a log line when this many seconds passed
_C.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False  # (masqclip) DistributedDataParallel option

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True
# (masqclip) mixed-precision inference (evaluation, predict, evaluation during training); off by
# default: the paper's numbers come from fp32 inference. PRECISION "" = SOLVER.AMP.PRECISION.
_C.TEST.AMP = CN()
_C.TEST.AMP.ENABLED = False
_C.TEST.AMP.PRECISION = ""
# (masqclip) bf16 inference on CPUs with native bf16 matrix units (Intel AMX): matrix weights
# converted to bf16 once after loading, norms and post-processing in fp32 (masqclip/modeling/bf16.py).
# Elsewhere (no AMX, or a GPU) a one-line notice and fp32.
_C.TEST.BF16_WEIGHTS = False
_C.TEST.PRECISE_BN = CN()
_C.TEST.PRECISE_BN.ENABLED = False
_C.TEST.PRECISE_BN.NUM_ITER = 200
# --- (masqclip) evaluation keys (masqclip/evaluation/) ---
# Class-agnostic proposal recall (the distillation diagnostic): AR@k for k in TOPK at IOU_THRESHOLD,
# mAR@k averaged over MEAN_IOU_THRESHOLDS; reported for all, base and novel ground truth.
_C.TEST.PROPOSAL_RECALL = CN()
_C.TEST.PROPOSAL_RECALL.ENABLED = True  # with instance evaluation (coco evaluator_type)
_C.TEST.PROPOSAL_RECALL.TOPK = [10, 20, 50, 100]
_C.TEST.PROPOSAL_RECALL.IOU_THRESHOLD = 0.5
# (masqclip) also 'AR@conf': recall by the proposals scored >= this, the ones the model claims as
# objects. 0.8 = the paper's distillation alpha, the score at which a teacher mask counts as found.
_C.TEST.PROPOSAL_RECALL.SCORE_THRESHOLD = 0.8
_C.TEST.PROPOSAL_RECALL.MEAN_IOU_THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
_C.TEST.INFERENCE_LOG_PERIOD = 50  # evaluation logs progress (images/s, ETA) every this many batches; 0 = never
# --- end (masqclip) evaluation keys ---

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0: a fresh random seed, logged
_C.CUDNN_BENCHMARK = False
_C.VIS_PERIOD = 0
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0

# (masqclip) MLflow tracking; never fatal to a job.
_C.TRACKING = CN()
_C.TRACKING.ENABLED = True
_C.TRACKING.URI = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db (relative to CWD)
_C.TRACKING.EXPERIMENT = ""  # "" = $MLFLOW_EXPERIMENT_NAME, else "masqclip"
_C.TRACKING.RETRIES = 3  # attempts per call to a SQLite store (more while it is locked) before tracking stops
_C.TRACKING.BACKOFF_SECONDS = 0.5  # first retry delay, doubled each attempt
_C.TRACKING.HTTP_TIMEOUT = 4  # default MLFLOW_HTTP_REQUEST_TIMEOUT (seconds) when unset
_C.TRACKING.HTTP_RETRIES = 1  # default MLFLOW_HTTP_REQUEST_MAX_RETRIES when unset (a dead server: ~2 x 4 s)

# ---------------------------------------------------------------------------------------------
# Accepted but ignored
# ---------------------------------------------------------------------------------------------
# Keys (or whole sections) that exist so detectron2, Mask2Former and MasQCLIP configs load, but
# that this implementation never reads: key -> why. Loading a config that sets one to a value other
# than its default logs a one-line warning naming the key(s) and the file (``config.py``).
# tests/test_config_keys.py checks that every key not listed here is read somewhere in the package.
IGNORED_KEYS: dict[str, str] = {
    "MODEL.MASK_ON": "an R-CNN switch; these models always predict masks",
    "MODEL.LOAD_PROPOSALS": "precomputed R-CNN proposals; the queries are the proposals",
    "MODEL.KEYPOINT_ON": "no keypoint head",
    "MODEL.RESNETS.STEM_TYPE": "the stem is always the basic 7x7 convolution + max-pool",
    "MODEL.RESNETS.RES5_MULTI_GRID": "no DeepLab multi-grid dilation in res5",
    "MODEL.RESNETS.DEFORM_MODULATED": "deformable convolutions are not built (DEFORM_ON_PER_STAGE refuses them)",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": "deformable convolutions are not built (DEFORM_ON_PER_STAGE refuses them)",
    "MODEL.SEM_SEG_HEAD.NAME": "the head is always MaskFormerHead (pixel decoder + transformer decoder)",
    "MODEL.MASK_FORMER.ENC_LAYERS": "MaskFormer v1's encoder over res5; the masked-attention decoder has none",
    "MODEL.SWIN": "no Swin backbone is built",
    "INPUT.MIN_SIZE_TRAIN": "training resizes by large-scale jitter (INPUT.IMAGE_SIZE, MIN_SCALE, MAX_SCALE)",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "training resizes by large-scale jitter (INPUT.IMAGE_SIZE, MIN_SCALE, MAX_SCALE)",
    "INPUT.MAX_SIZE_TRAIN": "training resizes by large-scale jitter (INPUT.IMAGE_SIZE, MIN_SCALE, MAX_SCALE)",
    "INPUT.FORMAT": "images are always read as RGB (PIXEL_MEAN / PIXEL_STD are in RGB order)",
    "INPUT.MASK_FORMAT": "polygons and RLE are both decoded to bitmasks",
    "INPUT.CROP": "Mask2Former's semantic-segmentation crop; training crops by large-scale jitter",
    "INPUT.DATASET_MAPPER_NAME": "one mapper reads every dataset format; training augmentation is always LSJ",
    "INPUT.COLOR_AUG_SSD": "no colour augmentation",
    "INPUT.SIZE_DIVISIBILITY": "images are padded to MODEL.MASK_FORMER.SIZE_DIVISIBILITY",
    "DATASETS.PROPOSAL_FILES_TRAIN": "precomputed R-CNN proposals",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": "precomputed R-CNN proposals",
    "DATASETS.PROPOSAL_FILES_TEST": "precomputed R-CNN proposals",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": "precomputed R-CNN proposals",
    "DATALOADER.ASPECT_RATIO_GROUPING": "LSJ training crops are all square",
    "DATALOADER.SAMPLER_TRAIN": "training order is always a seeded shuffle per epoch (as TrainingSampler's)",
    "DATALOADER.REPEAT_THRESHOLD": "no repeat-factor sampling",
    "SOLVER.REFERENCE_WORLD_SIZE": "no automatic rescaling of batch and learning rate; IMS_PER_BATCH is global",
    "TEST.EXPECTED_RESULTS": "detectron2's regression check of final metrics",
    "TEST.AUG": "no test-time augmentation (the paper evaluates at one scale)",
    "TEST.PRECISE_BN": "no precise-BN pass (the norms are frozen BN and GroupNorm)",
    "VIS_PERIOD": "no visualisation during training (masqclip predict draws predictions)",
    "GLOBAL.HACK": "a detectron2 placeholder",
}


def ignored_reason(key: str) -> str | None:
    """Why ``key`` (e.g. ``"TEST.AUG.FLIP"``) is ignored, or None when the code reads it."""
    parts = key.split(".")
    for depth in range(len(parts), 0, -1):
        reason = IGNORED_KEYS.get(".".join(parts[:depth]))
        if reason is not None:
            return reason
    return None
