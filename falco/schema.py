# ruff: noqa: UP045 (OmegaConf schemas need typing.Optional, not `X | None`)
"""Typed schemas of every config: the one place each knob's default and meaning are written.

Each option file of a config group extends its group's schema through its defaults list
(`defaults: [method_schema, _self_]`) and sets only what is that option's own (its network, its
margin, ...); conf/train.yaml extends `train_schema`. So a misspelled key (`method.marign=0.5`), a
wrong type (`method.steps=abc`) or an unknown choice (`method.id_loss=hing`) fails when the config
is composed, with the key named, before anything is loaded. What the schemas cannot express (one
knob against another) is checked by falco/config.py `validate` and falco/keyed/config.py.

Where a default lives: the knobs of a block or group (method, stages, heldout, detector,
trainer, logger, data) here; an option's own values (identity margins, network targets) in its
conf/<group>/<option>.yaml; the run's own top-level scalars (run_dir, batch_size, ...) in
conf/train.yaml, typed here. `python train.py --cfg job` prints the composed whole.

`register` puts the schemas in Hydra's ConfigStore; it runs before every composition in this
repository (hydra_plugins/falco_schema, and explicitly in train.py and tests/conftest.py).
This module imports no other part of falco but leaf data (views, data.imageio): falco/config.py
and falco/keyed/config.py import from it, never the other way round.
"""

from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .data.imageio import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from .views import ViewSpec

# --- Choices. StrEnum: a composed value is its member, equal to (and printed, hashed, JSON-encoded
# as) the plain string, so code comparing with "hinge" and cache keys are unchanged.


class IdLoss(StrEnum):
    """How the identity term scores the distance d from the original (margin in the recognizer's score)."""

    two_sided = "two_sided"  # |d - margin| (paper)
    hinge = "hinge"  # max(0, margin - d): only pushes away


class Init(StrEnum):
    """Where the trainable latent starts."""

    fake = "fake"  # the paired nearest fake (paper)
    inversion = "inversion"  # the inversion's latent of the original (inversion=projection or e4e)
    virtual = "virtual"  # the person's virtual face (method=keyed, its only start)


class Grouping(StrEnum):
    """Keyed mode: who is one person."""

    auto = "auto"  # the dataset's identity where known, else clusters
    identity = "identity"  # the dataset's identity labels (every image needs one)
    cluster = "cluster"  # clusters of the recognizer's embeddings, labels ignored


class Linkage(StrEnum):
    """Keyed mode: agglomerative clustering of unlabeled originals."""

    complete = "complete"  # every pair in a cluster within the threshold
    average = "average"
    single = "single"


class AlignmentFailure(StrEnum):
    """What happens to a photo whose MTCNN landmarks are implausible."""

    skip = "skip"  # skipped (recorded with its reason)
    box = "box"  # aligned from the face box instead (recorded)


class Alignment(StrEnum):
    """How photos are aligned into the generator's frame."""

    ffhq = "ffhq"  # FFHQ's recipe from MTCNN's eyes and mouth corners (FFHQ-trained generators)
    template = "template"  # to where MTCNN finds the generator's own landmarks (any other generator)


class CelebASplit(StrEnum):
    """CelebA's partition, mapped to CelebA-HQ through the mapping file."""

    train = "train"
    val = "val"
    test = "test"
    all = "all"


class HeldoutRecognizer(StrEnum):
    """Held-out identity judges (falco/heldout.py)."""

    sface = "sface"
    lightcnn_v4 = "lightcnn_v4"
    faceplugin_mfn = "faceplugin_mfn"  # needs npm at set-up


class HeldoutAttribute(StrEnum):
    """Held-out attribute judges (falco/heldout.py)."""

    adience = "adience"  # Adience age/gender (Caffe)
    faceapi = "faceapi"  # face-api.js age/gender (npm); left out when attributes=ensemble puts it in the loss
    mini_xception = "mini_xception"  # mini-XCEPTION gender/expression (Keras)
    faceplugin = "faceplugin"  # faceplugin gender/age/pose/expression (npm)
    faceres = "faceres"  # FaceRes (HSE) gender/age, from @vladmandic/human (npm)


def check_choices(config: object, prefix: str) -> None:
    """Turns the choice fields of a dataclass built in Python (plain strings) into their Enum, so
    a bad value fails there too, naming the knob (`prefix` + field name)."""
    for f in fields(config):  # type: ignore[arg-type]
        kind, value = f.type, getattr(config, f.name)
        if isinstance(kind, type) and issubclass(kind, Enum) and not isinstance(value, kind):
            try:
                setattr(config, f.name, kind(value))
            except ValueError:
                raise ValueError(f"{prefix}{f.name} must be one of {[c.value for c in kind]}, got {value!r}") from None


# --- method


@dataclass
class MethodConfig:
    """FALCO (CVPR 2023): L = id_weight * id_loss(d, margin) + attr_weight * L1(attribute features),
    minimized per image by Adam over the latent. Selected by conf/method/falco.yaml, which also ties
    margin, attr_weight and views.views to the chosen identity and attribute configs."""

    name: str = "falco"  # falco | keyed: which method config was chosen
    steps: int = 50  # Adam steps per image (paper: 50)
    lr: float = 0.01  # Adam learning rate (paper: 0.01)
    # MultiStepLR milestones as fractions of the steps (steps 37 and 45 of 50)
    milestones: list[float] = field(default_factory=lambda: [0.75, 0.9])
    gamma: float = 0.8  # learning-rate factor at each milestone
    id_weight: float = 10.0  # weight of the identity term (paper: 10)
    # weight of the attribute term; composed: the attribute config's `attr_weight` (paper: 0.1 with
    # FaRL). A number is required (validate): null only where a config does not set it
    attr_weight: Optional[float] = None
    # identity margin in the recognizer's own score (dlib: a Euclidean distance, ArcFace: a cosine
    # similarity, paper m = 0); composed: the identity config's `margin`
    margin: Optional[float] = None
    id_loss: IdLoss = IdLoss.two_sided  # two_sided |d - margin| (paper) | hinge max(0, margin - d)
    init: Init = Init.fake  # fake (paired nearest fake, paper) | inversion (the inversion's latent)
    virtual_weight: float = 0.0  # keyed mode: weight of the pull toward the person's virtual identity
    # true: reproduce the official code's defects (range mix, unaligned target, min-max JPEG q75
    # output; falco/quirks.py) to match the paper's numbers; false: the method done right
    faithful_quirks: bool = False
    # true: optimize one image at a time with the unfolded synthesis, so an image's result does not
    # depend on its batch, shard or rank (bit for bit; in fp32 it is the official per-image loop's),
    # ~2x slower; false: batched and folded, fast; results differ from the per-image loop by rounding
    batch_invariant: bool = False
    # random views of the attribute loss (falco/views.py): views.views = how many per step besides the
    # plain one (composed: the attribute config's `views`; 0 = the paper's loss), and their crop
    # shift / zoom / rotation, blur and colour ranges. Only changes that survive them pay
    views: ViewSpec = field(default_factory=ViewSpec)

    def __post_init__(self) -> None:
        check_choices(self, "method.")


@dataclass
class KeyedMethodConfig(MethodConfig):
    """Keyed mode (after KFAAR, NDSS 2025; docs/keyed.md): every person gets one virtual identity
    derived from a secret key; each image is pulled toward it while the attribute loss keeps pose,
    expression and attributes. Selected by conf/method/keyed.yaml. `key_file` / `key_env` hold a
    PATH or a variable NAME, never the key itself: the resolved config is saved in the run."""

    name: str = "keyed"
    # path of the key file (>= 128 bits: hex, base64:..., or raw bytes); wins over key_env
    key_file: Optional[str] = None
    # NAME of the environment variable holding the key (hex or base64:...) when key_file is null
    key_env: Optional[str] = "FALCO_KEY"
    lr: float = 0.03  # Adam learning rate (FALCO: 0.01): the pull toward a distinctive target needs longer moves
    id_loss: IdLoss = IdLoss.hinge  # only push away from the original; the virtual pull sets where the face goes
    init: Init = Init.virtual  # every image starts from its person's virtual face (the only start in keyed mode)
    virtual_weight: float = 10.0  # weight of the distance to the person's virtual target (consistency)
    grouping: Grouping = Grouping.auto  # auto (dataset identity where known, else clusters) | identity | cluster
    # recognizer distance below which unlabeled originals may be one person; null = the recognizer's rule
    cluster_threshold: Optional[float] = None
    cluster_linkage: Linkage = Linkage.complete  # complete (every pair within the threshold) | average | single
    candidates: int = 16  # key-derived draws compared per person
    attribute_keep: int = 4  # of those, the closest to the person's age/gender compete; the most distinctive is kept
    distinctiveness: float = 2.0  # target = center + this * (virtual face - center); > 1 spreads identities apart
    # a draw is rejected when its target is closer than this to one of the person's originals;
    # null = the larger of the recognizer's same-person rule and the identity margin
    reject_original: Optional[float] = None
    # ... or closer than this to another person's target (same key); null = the same-person rule
    min_separation: Optional[float] = None
    max_draws: int = 256  # give up (error) after this many draws for one person
    center_samples: int = 256  # generator samples (public seed) whose mean embedding is the population center


# --- blocks of conf/train.yaml


@dataclass
class StagesConfig:
    """`stages:` the cached stages before the optimization (falco/pipeline.py, which adds the
    knobs a run sets itself in StageKnobs)."""

    pool_size: int = 1024  # fakes sampled for pairing (paper: 60,000)
    pool_seed: int = 0  # seed of the fake pool's stream (disjoint from the synthetic data's stream)
    # true: never pair two originals with the same fake (while the pool allows it) | false: each its
    # nearest fake (paper) | null: the attribute config's choice (attributes.pairing_unique; train.py
    # writes it here, so config.yaml records it): on for the embedded default, off for FaRL
    pairing_unique: bool | None = None
    pairing_detectable_only: bool = True  # pair only with fakes in which MTCNN finds a face
    # with pairing_unique: also skip a candidate fake that the run's recognizer calls the same person
    # as a fake already given to another original (no two people start from near-twins) | false: off
    pairing_distinct: bool = False
    pairing_views: int = 0  # pairing features averaged over this many fixed random views (falco/views.py); 0 = paper
    frame_samples: int = 64  # generator samples used to measure where its faces' landmarks sit
    batch: int = 32  # images per batch in the batched stages (inversion, pairing features)
    # implausible MTCNN landmarks: skip (recorded) | box (align from the face box, recorded)
    alignment_failure: AlignmentFailure = AlignmentFailure.skip

    def __post_init__(self) -> None:
        check_choices(self, "stages.")


@dataclass
class HeldoutConfig:
    """`heldout:` judges no loss uses, reported FIRST in summary.json and in every evaluation
    (falco/heldout.py); the white-box figures follow. Shared by train.yaml and evaluate.yaml."""

    enabled: bool = True  # false: the white-box figures only
    recognizers: list[HeldoutRecognizer] = field(default_factory=lambda: list(HeldoutRecognizer))  # identity judges
    detector: bool = True  # YuNet: attacker-style alignment of every image (it did not select the inputs)
    attributes: list[HeldoutAttribute] = field(default_factory=lambda: list(HeldoutAttribute))  # [] = none


@dataclass
class DetectorConfig:
    """`detector:` MTCNN, which finds and aligns every photo."""

    min_prob: float = 0.9  # face probability below which a detection is ignored


# --- config groups


@dataclass
class TrainerConfig:
    """conf/trainer/*.yaml: the Lightning Trainer (its other arguments: `+trainer.NAME=value`)."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = MISSING  # cpu | gpu (Lightning's names)
    devices: Any = 1  # processes (GPUs) per node; -1 = every visible GPU
    num_nodes: int = 1  # nodes of a multi-node SLURM job
    strategy: str = "auto"  # auto (one process) | ddp (Lightning re-launches the script per rank) | ddp_spawn
    # auto: by the hardware (falco/precision.py; config.yaml records the choice): bf16-mixed where bf16
    # is native (CPUs with AVX512-BF16/AMX, Ampere+ GPUs), else 32-true on CPUs (bf16 would be emulated,
    # ~50x slower) and 16-mixed on GPUs | 32-true | bf16-mixed | 16-mixed (GPU; its GradScaler's
    # skipped steps couple the images of a batch)
    precision: str = "auto"
    inference_mode: bool = False  # required: the latent optimization needs gradients inside predict
    enable_checkpointing: bool = False  # outputs are the checkpoint: each image is written when done
    enable_progress_bar: bool = True  # Lightning's bar, on terminals only (train.py); logs get falco/progress.py lines


@dataclass
class LoggerConfig:
    """conf/logger/*.yaml: train.py, evaluate.py and train_classifier build one only when `_target_` is set."""

    _target_: Optional[str] = None


@dataclass
class CSVLoggerConfig(LoggerConfig):
    """Per-batch losses and the run summary as CSV under <run_dir>/<name> (never faces or ids)."""

    _target_: Optional[str] = "pytorch_lightning.loggers.CSVLogger"
    name: str = "logs"  # sub-directory of the run directory


@dataclass
class WandbLoggerConfig(LoggerConfig):
    """Weights & Biases: per-batch losses and the summary only (no faces, identities, latents or mapping)."""

    _target_: Optional[str] = "pytorch_lightning.loggers.WandbLogger"
    project: str = "falco"  # W&B project name
    offline: bool = True  # false = stream to the W&B server (needs network and `wandb login`)
    log_model: bool = False  # there is no model to upload


@dataclass
class DataConfig:
    """conf/data/*.yaml: the builder in falco/data/sources.py that `_target_` names, and its knobs."""

    _target_: str = MISSING


@dataclass
class SyntheticData(DataConfig):
    """Faces sampled from the embedded generator, treated as photos (their latents are never used)."""

    _target_: str = "falco.data.sources.synthetic"
    identities: int = 16  # people
    views: int = 1  # photos per person
    seed: int = 0  # seed of the data stream (disjoint from the fake pool's)
    check_faces: bool = True  # redraw an identity whose generated face MTCNN cannot find (~8% of DCGAN samples)
    check_min_prob: float = 0.95  # MTCNN probability the check asks for
    photo_size: int = 128  # side of each photo in pixels (the 64 px face is upscaled)
    augment: bool = False  # re-frame, rotate, colour-jitter and JPEG-compress each view
    rotate_deg: float = 10.0  # max rotation of a view, degrees
    scale_jitter: float = 0.12  # max relative zoom of a view
    shift_jitter: float = 0.06  # max shift of a view, fraction of the photo side
    color_jitter: float = 0.15  # max relative change of brightness, contrast and saturation
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 95])  # JPEG quality range of a view


@dataclass
class PhotoData(DataConfig):
    """Photos on disk."""

    root: str = MISSING  # the dataset's folder (required): data.root=/path
    limit: Optional[int] = None  # only the first N images (sorted by path); null = all
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before decoding (decompression bombs)
    min_side: int = DEFAULT_MIN_SIDE  # images with a shorter side are skipped as too small


@dataclass
class FolderData(PhotoData):
    """Any folder of photos, searched recursively; the largest face of each is anonymized."""

    _target_: str = "falco.data.sources.folder"
    # CSV of per-image labels (header `file,<label>,...`, file relative to root), carried to the
    # release; a `Male` column (1/0) is the truth the held-out gender judges are scored against; null = none
    labels: Optional[str] = None


@dataclass
class LFWData(PhotoData):
    """LFW: people folders Name/Name_0001.jpg (identity = folder name) and the verification pairs."""

    _target_: str = "falco.data.sources.lfw"
    # pairs under root; method=keyed re-keys them into release/pairs.csv; null = none
    pairs_file: Optional[str] = "pairs.txt"


@dataclass
class CelebAHQData(PhotoData):
    """CelebA-HQ in the CelebAMask-HQ layout (conf/data/celebahq.yaml: the files it reads)."""

    _target_: str = "falco.data.sources.celebahq"
    split: CelebASplit = CelebASplit.all  # train | val | test | all (CelebA's partition, through the mapping file)
    require_identity: bool = False  # fail when identity_CelebA.txt is missing (else identities are unknown)
    partition_file: Optional[str] = None  # explicit path to list_eval_partition.txt; null = search
    identity_file: Optional[str] = None  # explicit path to identity_CelebA.txt; null = search


@dataclass
class GeneratorConfig:
    """conf/generator/*.yaml."""

    net: Any = MISSING  # the network: {_target_: loader, its arguments}
    alignment: Alignment = MISSING  # ffhq (FFHQ-trained generators) | template (the generator's own landmarks)


@dataclass
class IdentityConfig:
    """conf/identity/*.yaml: the recognizer of the identity loss and the pairing."""

    net: Any = MISSING  # the network: {_target_: loader, its arguments}
    margin: float = MISSING  # default identity margin (method.margin), in the recognizer's own score
    # Margins worth trying, in the same score; read by experiments/optuna_search.yaml and margin_sweep.yaml
    margin_range: list[float] = MISSING  # [low, high] of the search interval
    margin_grid: str = MISSING  # the sweep's margins (a Hydra sweep list "a,b,c")


@dataclass
class AttributesConfig:
    """conf/attributes/*.yaml: the attribute network of the attribute loss and the pairing."""

    net: Any = MISSING  # the network: {_target_: loader, its arguments}
    attr_weight: float = MISSING  # default attribute-loss weight for these features (method.attr_weight)
    views: int = MISSING  # default random views of the attribute loss per step (method.views.views)
    pairing_unique: bool = MISSING  # default of stages.pairing_unique with these features


@dataclass
class InversionConfig:
    """conf/inversion/*.yaml: originals -> latents (method.init=inversion, and W+ generators' kept layers)."""

    net: Any = MISSING  # the network: {_target_: loader, its arguments}; null = no inversion
    needs_generator: bool = False  # true: the loader is also given the configured generator


# Options with official weights: `checkpoint` is the file their net.path reads; each option's
# file says what it defaults to (null = the weights folder's copy, `???` = required).


@dataclass
class CheckpointGeneratorConfig(GeneratorConfig):
    checkpoint: Optional[str] = MISSING  # path of the weights file


@dataclass
class CheckpointIdentityConfig(IdentityConfig):
    checkpoint: Optional[str] = MISSING  # path of the weights file


@dataclass
class CheckpointAttributesConfig(AttributesConfig):
    checkpoint: Optional[str] = MISSING  # path of the weights file


@dataclass
class CheckpointInversionConfig(InversionConfig):
    checkpoint: Optional[str] = MISSING  # path of the weights file


# --- the primary config


@dataclass
class TrainConfig:
    """conf/train.yaml. The run's own scalars are typed here; their defaults and comments are
    train.yaml's. Blocks and groups carry their schemas' defaults."""

    data: DataConfig = MISSING
    generator: GeneratorConfig = MISSING
    identity: IdentityConfig = MISSING
    attributes: AttributesConfig = MISSING
    inversion: InversionConfig = MISSING
    method: MethodConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    run_dir: str = MISSING
    cache_dir: str = MISSING
    batch_size: int = MISSING
    max_in_flight: Optional[int] = MISSING
    num_workers: int = MISSING
    summary: bool = MISSING
    estimate: bool = MISSING
    progress_every_s: float = MISSING
    device: str = MISSING
    shard: Optional[str] = MISSING
    stages_only: bool = MISSING
    release_tar: bool = MISSING
    objective: Any = MISSING  # a search trial's `objective:` block (evaluation/objective.py)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)


# (group, name) -> schema. Group configs list theirs by name; train.yaml lists `train_schema`,
# evaluate.yaml `heldout_schema@heldout`.
SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): TrainConfig,
    (None, "heldout_schema"): HeldoutConfig,
    ("method", "method_schema"): MethodConfig,
    ("method", "keyed_schema"): KeyedMethodConfig,
    ("trainer", "trainer_schema"): TrainerConfig,
    ("logger", "none_schema"): LoggerConfig,
    ("logger", "csv_schema"): CSVLoggerConfig,
    ("logger", "wandb_schema"): WandbLoggerConfig,
    ("data", "synthetic_schema"): SyntheticData,
    ("data", "folder_schema"): FolderData,
    ("data", "lfw_schema"): LFWData,
    ("data", "celebahq_schema"): CelebAHQData,
    ("generator", "generator_schema"): GeneratorConfig,
    ("generator", "generator_checkpoint_schema"): CheckpointGeneratorConfig,
    ("identity", "identity_schema"): IdentityConfig,
    ("identity", "identity_checkpoint_schema"): CheckpointIdentityConfig,
    ("attributes", "attributes_schema"): AttributesConfig,
    ("attributes", "attributes_checkpoint_schema"): CheckpointAttributesConfig,
    ("inversion", "inversion_schema"): InversionConfig,
    ("inversion", "inversion_checkpoint_schema"): CheckpointInversionConfig,
}


def register() -> None:
    """Stores every schema in Hydra's ConfigStore; a no-op when they are there (it runs before every compose)."""
    store = ConfigStore.instance()
    if all(f"{name}.yaml" in (store.repo if group is None else store.repo.get(group, {})) for group, name in SCHEMAS):
        return
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
