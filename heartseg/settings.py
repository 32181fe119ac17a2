"""One typed settings object, read from ``HEARTSEG_*`` environment variables.

Every default is safe for the embedded mode (one host, no servers): SQLite in the
working folder, results in a local folder, the model shipped with HeartSeg.
A process reads its settings once, when it starts (:func:`get_settings`), and passes
them where they are needed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root in a checkout (in an installed wheel: the site-packages folder holding the packages).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _shipped_models_dir() -> Path:
    """The checkout's ``models/`` when HeartSeg runs from a checkout, else the installed wheel's copy of it (the
    package ``heartseg_models``); the checkout's path when neither exists (an image built without the model)."""
    checkout = PROJECT_ROOT / "models"
    if (PROJECT_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    try:
        return Path(str(files("heartseg_models")))
    except ModuleNotFoundError:
        return checkout


#: The folder of the models shipped with HeartSeg (a trusted root).
SHIPPED_MODELS_DIR = _shipped_models_dir()
#: The default model: nnU-Net v2's 2D configuration trained on ACDC.
SHIPPED_MODEL_DIR = SHIPPED_MODELS_DIR / "Dataset027_ACDC" / "nnUNetTrainer__HeartSegPlans__2d"


class Settings(BaseSettings):
    """HeartSeg configuration.

    Each field is read from the environment variable ``HEARTSEG_<FIELD NAME>``
    (for example ``HEARTSEG_DATABASE_URL``).
    """

    model_config = SettingsConfigDict(env_prefix="HEARTSEG_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///heartseg.db",
        description="SQLAlchemy URL of the record (PostgreSQL in production).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL (redis://host:6379/0); unset means the embedded, serverless broker.",
    )
    embedded_broker_dir: Path = Field(
        default=Path("heartseg-broker"),
        description="Folder of the serverless (kombu filesystem) broker used when broker_url is unset.",
    )
    results_uri: str = Field(
        default="heartseg-results",
        description="Where masks are written: a local folder or s3://bucket/prefix.",
    )
    model_dir: Path = Field(
        default=SHIPPED_MODEL_DIR,
        description="The trained nnU-Net v2 model folder used when none is named.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); unset: AWS or AWS_ENDPOINT_URL."
    )
    cache_dir: Path = Field(
        default=Path("heartseg-cache"), description="Where workers download remote studies before reading them."
    )
    trusted_model_roots: list[Path] = Field(
        default_factory=list,
        description="Folders whose models may be loaded (JSON list), besides the shipped models and model_dir.",
    )
    folds: list[str] | None = Field(default=None, description="Folds to ensemble; unset: every fold present.")
    checkpoint_name: str = Field(default="checkpoint_final.pth", description="Checkpoint file inside each fold.")
    use_mirroring: bool = Field(default=True, description="Test-time augmentation by mirroring.")
    tile_step_size: float = Field(default=0.5, gt=0, le=1, description="Sliding-window step, fraction of a patch.")
    device: str = Field(default="auto", description="'cuda', 'cpu' or 'auto' (cuda when available).")
    predictor: Literal["batched", "nnunet"] = Field(
        default="batched",
        description="'batched': the tiles of several frames, with their mirrored copies, per forward pass; "
                    "'nnunet': nnU-Net's own predictor (one tile per pass), for comparison.",
    )
    tiles_per_batch: int | None = Field(
        default=None, ge=1,
        description="Network inputs per forward pass of the batched predictor (a tile and each mirrored copy "
                    "count one); unset: 8 on a CPU, 256 on a GPU (the fastest measured).",
    )
    fold_pass: Literal["loop", "vmap"] = Field(
        default="loop",
        description="How the batched predictor runs an ensemble's folds over a batch of tiles on the device: "
                    "'loop', the networks back to back; 'vmap', one vectorised call over their stacked weights "
                    "(torch.func). Same masks; bench.fold_pass measures both.",
    )
    resampling: Literal["plans", "torch"] = Field(
        default="plans",
        description="'plans': the model's own resampling of the image in and the probabilities out (nnU-Net's "
                    "scipy functions for the shipped model); 'torch': nnU-Net's torch resampling on the "
                    "segmentation device (masks differ by a few voxels; bench.resampling measures them).",
    )
    studies_in_flight: int = Field(
        default=2, ge=1,
        description="Studies one segmentation worker holds at once (threads sharing its model): one on the "
                    "device while the next is loaded and preprocessed and the last one written.",
    )
    lease_s: float = Field(default=300.0, gt=0, description="How long a worker's claim on a study lasts unrenewed.")
    max_attempts: int = Field(
        default=3, ge=1,
        description="Tries of a study (an unexpected error, or its worker lost) before it is failed with the last "
                    "reason; bad input fails at once, transient errors (record, broker, storage) do not count.",
    )
    reconcile_s: float = Field(
        default=30.0, gt=0,
        description="How often the reconciler in every worker (and `heartseg reconcile --loop`) heals the record: "
                    "re-queues studies whose lease expired, re-sends messages lost for HEARTSEG_STALL_S.",
    )
    stall_s: float = Field(
        default=900.0, gt=0,
        description="A study queued or segmented whose message was sent this long ago, while no study made "
                    "progress (was claimed, segmented or finished) for as long, has its message sent again.",
    )
    heartbeat_s: float = Field(
        default=15.0, gt=0,
        description="How often a worker writes its heartbeat to the record; `heartseg status` shows those seen "
                    "within three beats as live.",
    )
    task_soft_time_limit_s: float = Field(default=3600.0, gt=0, description="Soft time limit of one study task.")
    task_time_limit_s: float = Field(
        default=3900.0, gt=0,
        description="Hard time limit of one study task; a segmentation worker stops renewing a lease it has held "
                    "this long, so a hung worker loses its study to another.",
    )
    visibility_timeout_s: float = Field(
        default=4 * 3600.0, gt=0,
        description="Redis re-delivers an unacknowledged task after this long; keep it above the hard time limit.",
    )
    pseudonymize_key: str | None = Field(
        default=None, repr=False,
        description="When set, the record keeps HMAC-SHA256 pseudonyms instead of patient/study identifiers.",
    )
    dicomweb_auth: str | None = Field(
        default=None, repr=False,
        description="HTTP basic credentials 'user:password' for DICOMweb sources (a PACS), never put in URIs.",
    )
    dicomweb_url: str | None = Field(
        default=None, pattern=r"^dicomwebs?://[^/?#]+",
        description="The PACS HeartSeg reads and writes, dicomweb://HOST:PORT/PATH (dicomwebs:// for HTTPS): the "
                    "one `heartseg viewer` shows; unset: `heartseg viewer --pacs` names it.",
    )
    viewer_url: str = Field(
        default="http://127.0.0.1:3000", pattern=r"^https?://",
        description="Where users open `heartseg viewer`: the start of the viewer links `heartseg report` gives.",
    )
    viewer_auth: str | None = Field(
        default=None, repr=False,
        description="HTTP basic credentials 'user:password' (comma-separated for several) that `heartseg viewer` "
                    "asks for; required when it listens off loopback.",
    )
    viewer_dist: Path = Field(
        default=PROJECT_ROOT / "ohif" / "dist",
        description="OHIF's built viewer (`make viewer` fetches it), which `heartseg viewer` serves.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Port of a worker's Prometheus /metrics endpoint (0.0.0.0); unset: no endpoint. "
                    "`heartseg worker gpu` gives its n-th device port + n.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json' writes one JSON object per log line, with run and study ids.",
    )
    shared_data: Path = Field(
        default=Path("../shared/data"),
        description="Folder holding the shared data sets (acdc/training, sunnybrook).",
    )
    min_inplane_spacing_mm: float = Field(
        default=0.1, gt=0, allow_inf_nan=False,
        description="Smallest plausible in-plane voxel spacing (mm); a study with a finer one is refused.",
    )
    max_inplane_spacing_mm: float = Field(
        default=20.0, gt=0, allow_inf_nan=False,
        description="Largest plausible in-plane voxel spacing (mm); a study with a coarser one is refused.",
    )
    min_slice_spacing_mm: float = Field(
        default=0.5, gt=0, allow_inf_nan=False,
        description="Smallest plausible spacing between slices (mm); a study with a smaller one is refused.",
    )
    max_slice_spacing_mm: float = Field(
        default=30.0, gt=0, allow_inf_nan=False,
        description="Largest plausible spacing between slices (mm); a study with a larger one is refused.",
    )
    qc_max_piece_ml: float = Field(
        default=5.0, ge=0, allow_inf_nan=False,
        description="QC flag 'pieces': a structure's volume outside its largest connected piece above this (ml).",
    )
    qc_max_piece_distance_mm: float = Field(
        default=80.0, gt=0, allow_inf_nan=False,
        description="QC flag 'far_piece': a structure's other piece centred farther than this from the heart's "
                    "centre (mm).",
    )
    qc_max_edge_area_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="QC flag 'edge_slice': labels on both end slices, the smaller (apical) one over this fraction "
                    "of the largest labelled slice area.",
    )
    qc_min_enclosed_fraction: float = Field(
        default=0.8, ge=0, le=1,
        description="QC flag 'lv_not_enclosed': a mid-ventricular LV cavity border less than this fraction "
                    "myocardium.",
    )
    qc_max_uncertainty: float = Field(
        default=0.1, ge=0, le=1,
        description="QC flag 'uncertain': a frame's mean normalised softmax entropy over the heart above this.",
    )
    qc_min_predicted_dice: float = Field(
        default=0.8, ge=0, le=1,
        description="QC flag 'low_predicted_dice': a structure's predicted Dice in a frame (the segmenter's "
                    "calibrated estimate, workers.quality) below this.",
    )
    postprocessing: bool = Field(
        default=True,
        description="Apply the model folder's postprocessing.pkl (nnU-Net's connected-component rules) to every "
                    "label map; a folder without the file, or false, gives the network's labels as they are.",
    )

    @model_validator(mode="after")
    def _redelivery_after_time_limit(self) -> Settings:
        """With Redis, a visibility timeout shorter than the hard time limit would re-deliver running studies."""
        if self.broker_url and self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                f"HEARTSEG_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s:g}) must exceed HEARTSEG_TASK_TIME_LIMIT_S "
                f"({self.task_time_limit_s:g}): otherwise Redis re-delivers a study that is still running")
        return self

    @model_validator(mode="after")
    def _spacing_limits_ordered(self) -> Settings:
        """Each plausible spacing range must be a range: minimum below maximum."""
        for kind, low, high in (("INPLANE", self.min_inplane_spacing_mm, self.max_inplane_spacing_mm),
                                ("SLICE", self.min_slice_spacing_mm, self.max_slice_spacing_mm)):
            if not low < high:
                raise ValueError(f"HEARTSEG_MIN_{kind}_SPACING_MM ({low:g}) must be below "
                                 f"HEARTSEG_MAX_{kind}_SPACING_MM ({high:g})")
        return self

    @property
    def trusted_roots(self) -> list[Path]:
        """The shipped models folder, the configured model folder, and any added roots."""
        return [SHIPPED_MODELS_DIR, self.model_dir, *self.trusted_model_roots]

    @property
    def acdc_training_dir(self) -> Path:
        """The folder of the real ACDC training patients inside :attr:`shared_data`."""
        return self.shared_data / "acdc" / "training"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process."""
    return Settings()
