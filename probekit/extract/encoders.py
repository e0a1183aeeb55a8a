"""Pre-trained speech encoders: waveforms in, per-layer pooled hidden states out.

The only module that imports ``transformers``. Supported: Wav2Vec2, HuBERT, WavLM, Data2VecAudio
(the "wav2vec2 family": raw waveform in, CNN feature encoder, transformer) and the encoder of
Whisper (log-mel in). Every hidden state (embedding output plus each layer) comes from one
forward pass and is pooled over valid frames only (:mod:`probekit.extract.pooling`).

Batch invariance is part of the contract: a segment's vectors do not depend on what else is in
the list given to :meth:`Encoder.encode` (to about 1e-5 in float32 on CPU).
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from probekit.extract.features import WhisperLogMel, normalize_waves, pad_waves
from probekit.choices import Device, Pooling, WhisperMode
from probekit.extract.pooling import pool_hidden, pooled_dim
from probekit.identity import json_sha256, update_with_file


# model_type -> family. The wav2vec2 family shares the feature-encoder/transformer layout and
# the `_get_feat_extract_output_lengths` helper.
_FAMILIES = {
    "wav2vec2": "wav2vec2",
    "hubert": "wav2vec2",
    "wavlm": "wav2vec2",
    "data2vec-audio": "wav2vec2",
    "whisper": "whisper",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


class EncoderError(ProbekitError, RuntimeError):
    """An encoder cannot be loaded or run; the message names what to fix."""


@dataclass(frozen=True)
class EncoderSpec:
    """What encoder to run.

    model: Hugging Face hub id or local folder. revision: hub branch, tag or commit.
    whisper_mode: "padded" feeds Whisper the 30 s window it was trained on; "fast" feeds only the
    real frames (faster, slightly different vectors; see docs/encoders.md). Ignored otherwise.
    device: auto (cuda when available) | cpu | cuda. trust_remote_code: never on by default.
    max_layer: compute hidden states 0..max_layer only (0 = embedding output); deeper layers are
    dropped before the forward pass.
    """

    model: str
    revision: str | None = None
    whisper_mode: str = "padded"
    device: str = "auto"
    trust_remote_code: bool = False
    max_layer: int | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def receptive_field(conv_layers: list[tuple[int, int]]) -> int:
    """Shortest input (samples) for which a stack of unpadded 1-D convolutions, given as
    (kernel, stride), yields one frame."""
    n = 1
    for kernel, stride in reversed(conv_layers):
        n = (n - 1) * stride + kernel
    return n


def whisper_frames(n_samples: int, samples_per_frame: int = 320) -> int:
    """Whisper encoder frames carrying audio: ceil(n_samples / 320) at 16 kHz (10 ms hop, conv stride 2)."""
    return math.ceil(n_samples / samples_per_frame)


def _resolve_device(device: str) -> torch.device:
    Device.check(device, "device", EncoderError)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EncoderError("device 'cuda' was asked for but no CUDA GPU is visible: use --device cpu or auto")
    return torch.device(device)


def _config_hash(config) -> str:
    # Fields that vary with the library version or the load path, not with the model, are left out.
    data = config.to_dict()
    for key in ("transformers_version", "_name_or_path", "_commit_hash", "dtype", "torch_dtype"):
        data.pop(key, None)
    return json_sha256(data)


def _local_weights_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise EncoderError(f"{folder} holds no weight file (*.safetensors or *.bin): is it a saved checkpoint?")
    for path in files:
        digest.update(path.name.encode())
        update_with_file(digest, path)
    return digest.hexdigest()


def _hub_commit(model: str, revision: str | None) -> str:
    """Commit hash of a hub download, read from the snapshot folder the config was cached in."""
    try:
        path = transformers.utils.cached_file(model, "config.json", revision=revision)
    except OSError:
        path = None
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", str(path or ""))
    if match:
        return match.group(1)
    return revision or ""


def looks_local(model: str) -> bool:
    """Whether ``model`` reads as a path rather than a hub id (``org/name`` or ``name``): absolute,
    ``./``, ``../`` or ``~``, more than one ``/``, a trailing ``/``, or a first part that is a
    folder here (``models/whisper-tny`` when ``models/`` exists)."""
    if model.startswith(("/", "./", "../", "~", ".\\")) or model.endswith("/") or model.count("/") > 1 or "\\" in model:
        return True
    first = model.split("/", 1)[0]
    return "/" in model and Path(first).is_dir()


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's host (``HF_ENDPOINT`` or huggingface.co), ``timeout`` seconds at most."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_reachable(spec: EncoderSpec) -> None:
    """Fail at once, naming the real problem, for a model that cannot load: a local-looking path
    that is no folder, or a hub id that is not in the local Hugging Face cache while the hub is
    off limits (``HF_HUB_OFFLINE``) or out of reach (no network), instead of retrying for 25 s."""
    model = spec.model
    if Path(model).expanduser().is_dir():
        return
    if looks_local(model):
        raise EncoderError(f"{model}: no such folder (a local model is a folder saved with save_pretrained)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json", revision=spec.revision)
    if isinstance(cached, str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise EncoderError(f"{model}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; download it on a "
                           "machine with network (or unset HF_HUB_OFFLINE), or pass a local folder")
    if not _hub_reachable():
        raise EncoderError(f"{model}: not in the local Hugging Face cache, and the hub cannot be reached (offline?); "
                           "download it on a machine with network, or pass a local folder")


def _load_failure(spec: EncoderSpec, what: str, exc: Exception) -> EncoderError:
    where = f"local folder {spec.model}" if Path(spec.model).exists() else f"hub id {spec.model!r}"
    rev = f" at revision {spec.revision!r}" if spec.revision else ""
    return EncoderError(
        f"cannot load the {what} of {where}{rev}: {exc}. Check the id or path and the revision; "
        "offline, the model must already be in the Hugging Face cache (or pass a local folder)."
    )


# ---------------------------------------------------------------------------------------------
# the encoder


class Encoder:
    """A loaded encoder. Build with :func:`load_encoder`.

    Attributes: sample_rate (Hz), num_hidden_states (embedding output + layers kept), hidden_size,
    min_samples (shortest input giving one frame), pads_safely (False where zero padding in a batch
    would change outputs: callers should then batch equal lengths; encode() copes anyway),
    identity (strings describing exactly what ran, for the cache attributes): the members of
    :class:`probekit.extract._extract.EncoderLike`, set in ``__init__``.
    """

    def __init__(self, spec: EncoderSpec, family: str, model, feature_extractor, config, device: torch.device, identity: dict[str, str]):
        self.spec = spec
        self.family = family
        self.model = model
        self.feature_extractor = feature_extractor
        self.config = config
        self.device = device
        self.identity = identity
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.hidden_size = int(config.d_model if family == "whisper" else config.hidden_size)
        total = int(config.encoder_layers if family == "whisper" else config.num_hidden_layers)
        self.num_hidden_states = (total if spec.max_layer is None else spec.max_layer) + 1
        #: Seconds spent per stage by encode_padded, summed over calls (see _tick).
        self.timings: dict[str, float] = {"features": 0.0, "forward": 0.0, "pooling": 0.0}
        self.sync_timings = False
        if family == "whisper":
            self.log_mel = WhisperLogMel.from_feature_extractor(feature_extractor, device)
            self.min_samples = 1
            self.pads_safely = True
            self._samples_per_frame = int(feature_extractor.hop_length) * int(model.conv1.stride[0] * model.conv2.stride[0])
            self._window_samples = int(feature_extractor.n_samples)
        else:
            self.min_samples = receptive_field(list(zip(config.conv_kernel, config.conv_stride)))
            # Group norm in the first conv normalises over time, padding included; no mask helps.
            # Data2VecAudio's positional embedding is a stack of convolutions that lets padding
            # leak into the last valid frames (only its input is zeroed), so it is unsafe too.
            self.pads_safely = getattr(config, "feat_extract_norm", "layer") == "layer" and config.model_type != "data2vec-audio"

    # -- public -------------------------------------------------------------------------------

    @property
    def fixed_windows(self) -> bool:
        """Whether every forward pass sees whole windows of one length (padded Whisper), so that its
        buffers have the same sizes from batch to batch."""
        return self.family == "whisper" and self.spec.whisper_mode == "padded"

    def input_samples(self, n_samples: int) -> int:
        """Samples the encoder actually processes for a segment of ``n_samples``: padded Whisper
        turns every started 30 s window into a whole one; the others see the segment as it is."""
        if self.fixed_windows:
            return -(-max(n_samples, 1) // self._window_samples) * self._window_samples
        return n_samples

    def encode(self, waves: list[np.ndarray], pooling: str = "mean") -> np.ndarray:
        """Pool every hidden state of each waveform.

        waves: float32 mono arrays at ``sample_rate`` Hz, each (n_samples,) with
        n_samples >= ``min_samples``. Returns (len(waves), num_hidden_states, pooled_dim) float32,
        pooled_dim = hidden_size (mean) or 2 * hidden_size (mean+std, mean first).
        """
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        for i, wave in enumerate(waves):
            if wave.ndim != 1:
                raise ValueError(f"wave {i} must be mono (n_samples,), got shape {wave.shape}")
        batch, lengths = pad_waves(waves)
        return self.encode_padded(batch, lengths, pooling)

    def encode_padded(self, batch: torch.Tensor, lengths: Sequence[int], pooling: str = "mean") -> np.ndarray:
        """:meth:`encode` for a zero-padded batch ``(B, max(lengths))`` float32 (host or device).

        Features, forward pass and pooling all run on the encoder's device; only the pooled
        ``(B, num_hidden_states, pooled_dim)`` float32 comes back. A pinned host batch is copied
        without blocking. Time spent is added to :attr:`timings` (seconds per stage).
        """
        Pooling.check(pooling, "pooling")
        lengths = [int(n) for n in lengths]
        for i, n in enumerate(lengths):
            if n < self.min_samples:
                raise ValueError(f"wave {i} has {n} samples, fewer than the encoder's receptive field of {self.min_samples}")
        if not lengths:
            return np.zeros((0, self.num_hidden_states, pooled_dim(self.hidden_size, pooling)), dtype=np.float32)
        batch = batch[:, : max(lengths)].to(self.device, torch.float32, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            if self.family == "whisper":
                pooled = self._encode_whisper(batch, lengths, pooling)
            else:
                pooled = self._encode_wav2vec2(batch, lengths, pooling)
        t0 = self._tick()
        out = pooled.float().cpu().numpy()
        self.timings["pooling"] += time.perf_counter() - t0
        return out

    # -- wav2vec2 family ----------------------------------------------------------------------

    def frames(self, n_samples: int) -> int:
        """Valid encoder frames for an input of n_samples, from the model's own length function."""
        if self.family == "whisper":
            return whisper_frames(min(n_samples, self._window_samples), self._samples_per_frame)
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n_samples)).item())

    def _encode_wav2vec2(self, batch: torch.Tensor, lengths: list[int], pooling: str) -> torch.Tensor:
        # Equal lengths need no padding, so group norm sees exactly what it sees solo.
        n = np.asarray(lengths)
        groups = [np.arange(len(n))] if self.pads_safely else [np.flatnonzero(n == k) for k in np.unique(n)]
        out = torch.empty(len(lengths), self.num_hidden_states, pooled_dim(self.hidden_size, pooling), device=self.device)
        for group in groups:
            rows = torch.tensor(group, device=self.device)
            out[rows] = self._forward_wav2vec2(batch[rows, : max(lengths[i] for i in group)], [lengths[i] for i in group], pooling)
        return out

    def _forward_wav2vec2(self, batch: torch.Tensor, lengths: list[int], pooling: str) -> torch.Tensor:
        t0 = self._tick()
        with self._host_stage():
            n = torch.tensor(lengths, device=self.device)
            # The extractor normalises each segment on its own (do_normalize), before any padding.
            values = normalize_waves(batch, n) if getattr(self.feature_extractor, "do_normalize", True) else batch
            kwargs = {}
            if self.pads_safely:
                kwargs["attention_mask"] = (torch.arange(batch.shape[1], device=self.device)[None, :] < n[:, None]).long()
        t1 = self._tick(t0, "features")
        out = self.model(values, output_hidden_states=True, **kwargs)
        frames = self.model._get_feat_extract_output_lengths(n).long()
        hidden = self._checked(out.hidden_states, int(frames.max()))
        t2 = self._tick(t1, "forward")
        with self._host_stage():
            pooled = pool_hidden(hidden, frames, pooling=pooling)
        self._tick(t2, "pooling")
        return pooled

    # -- whisper ------------------------------------------------------------------------------

    def _encode_whisper(self, batch: torch.Tensor, lengths: list[int], pooling: str) -> torch.Tensor:
        # Segments longer than one window are cut into consecutive 30 s windows, all pooled
        # into their segment's vector together.
        t0 = self._tick()
        window = self._window_samples
        pieces: list[tuple[int, int, int]] = []  # (segment, start, length)
        for i, n in enumerate(lengths):
            for start in range(0, n, window):
                pieces.append((i, start, min(window, n - start)))
        chunk_lengths = [n for _, _, n in pieces]
        frames = [self.frames(n) for n in chunk_lengths]
        padded = self.spec.whisper_mode == "padded"
        mel_lengths = [2 * f for f in frames]
        with self._host_stage():
            if len(pieces) == len(lengths):
                chunks = batch
            else:
                chunks = torch.zeros(len(pieces), min(window, batch.shape[1]), device=self.device)
                for k, (i, start, n) in enumerate(pieces):
                    chunks[k, :n] = batch[i, start : start + n]
            if padded:
                mel = self.log_mel.padded(chunks, chunk_lengths)
            else:
                mel = self.log_mel.real_frames(chunks, chunk_lengths, mel_lengths)
        t1 = self._tick(t0, "features")
        if padded:
            out = self.model(mel, output_hidden_states=True)
            hidden = self._checked(out.hidden_states, max(frames))
        else:
            hidden = whisper_encoder_hidden_states(self.model, mel, torch.tensor(mel_lengths, device=self.device), self._apply_final_norm)
            hidden = hidden[: self.num_hidden_states]
        t2 = self._tick(t1, "forward")
        with self._host_stage():
            owner = torch.tensor([i for i, _, _ in pieces], device=self.device)
            pooled = pool_hidden(hidden, torch.tensor(frames, device=self.device), owner, len(lengths), pooling)
        self._tick(t2, "pooling")
        return pooled

    # -- shared -------------------------------------------------------------------------------

    @property
    def _apply_final_norm(self) -> bool:
        return self.spec.max_layer is None or self.spec.max_layer >= int(self.config.encoder_layers)

    def _checked(self, hidden_states, n_frames: int) -> list[torch.Tensor]:
        """HF hidden states' first ``n_frames`` frames: ``num_hidden_states`` views ``(batch, n_frames, hidden)``."""
        expected = len(self.model.layers if self.family == "whisper" else self.model.encoder.layers) + 1
        if hidden_states is None or len(hidden_states) != expected:
            got = 0 if hidden_states is None else len(hidden_states)
            raise EncoderError(
                f"{self.spec.model}: the forward pass returned {got} hidden states, expected {expected} "
                "(embedding output + one per layer); this transformers version may not be supported"
            )
        # Only frames that carry audio are read: padded Whisper's 1500 frames are mostly padding.
        # Views, not a stacked copy: pooling reads each state once where it lies.
        return [h[:, :n_frames] for h in hidden_states[: self.num_hidden_states]]

    def _tick(self, since: float | None = None, stage: str | None = None) -> float:
        """Now, after charging the time since ``since`` to ``stage``. On CUDA, waits for the device
        first when :attr:`sync_timings` is set, so that stages are not blurred by async launches."""
        if self.sync_timings and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if since is not None and stage is not None:
            self.timings[stage] += now - since
        return now

    @contextmanager
    def _host_stage(self) -> Iterator[None]:
        """Features and pooling on a CPU run on one torch thread, the forward pass on all of them.

        Their operations are small: split over threads, each waits at a barrier for every thread,
        and one descheduled thread (a decoding worker, another process) stalls it for a time slice
        (docs/extract.md, "Host side on CPU").
        """
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)


def whisper_embed(encoder, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """A WhisperEncoder's input embedding (both convolutions, then the positions) of mel frames of any
    length: ``(batch, n_mel_frames // 2, d_model)``.

    mel: (batch, n_mels, n_mel_frames); mel_lengths: (batch,) valid mel frames, zero beyond them, or
    None when every row is valid to the end (no padding to zero).
    """
    gelu = torch.nn.functional.gelu
    x = gelu(encoder.conv1(mel))
    if mel_lengths is not None:
        # Zero what conv1 made of the padding (gelu(bias) != 0), as a solo run's conv2 padding is zero.
        steps = torch.arange(mel.shape[-1], device=mel.device)
        x = x * (steps[None, :] < mel_lengths[:, None])[:, None, :].to(x.dtype)
    x = gelu(encoder.conv2(x)).permute(0, 2, 1)
    n_frames = x.shape[1]
    if n_frames > encoder.embed_positions.num_embeddings:
        raise EncoderError(f"Whisper input of {n_frames} frames exceeds the {encoder.embed_positions.num_embeddings}-frame window")
    return x + encoder.embed_positions.weight[:n_frames].to(x.dtype)


def whisper_encoder_hidden_states(encoder, mel: torch.Tensor, mel_lengths: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
    """Run a WhisperEncoder's submodules on mel frames of any length (HF insists on 3000).

    mel: (batch, n_mels, n_mel_frames) log-mel, zero beyond each row's length; mel_lengths:
    (batch,) valid mel frames (even). Returns (len(layers) + 1, batch, n_mel_frames // 2, d_model):
    the embedding output (after the positional add), then each layer's output, the last one
    after the final layer norm when ``final_norm`` (as HF's ``output_hidden_states``). Padding
    never reaches valid frames: it is zeroed between the convolutions and masked as attention keys.
    """
    x = whisper_embed(encoder, mel, mel_lengths)
    n_frames = x.shape[1]
    lengths = (mel_lengths + 1) // 2
    valid = torch.arange(n_frames, device=mel.device)[None, :] < lengths[:, None]
    # Additive key mask, (batch, 1, query, key); float16's minimum is safe under autocast too.
    mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
    mask = mask.masked_fill(~valid, torch.finfo(torch.float16).min)[:, None, None, :].expand(-1, 1, n_frames, -1)
    states = [x]
    for layer in encoder.layers:
        x = layer(x, mask)
        states.append(x)
    if final_norm and len(encoder.layers) > 0:
        states[-1] = encoder.layer_norm(states[-1])
    return torch.stack(states)


# ---------------------------------------------------------------------------------------------
# loading


def load_encoder(spec: EncoderSpec) -> Encoder:
    """Load ``spec.model`` in eval mode, float32 weights, on the chosen device.

    Raises EncoderError for an unsupported architecture, a missing or unreachable checkpoint, a
    bad option, or a max_layer outside 0..num_layers.
    """
    WhisperMode.check(spec.whisper_mode, "whisper_mode", EncoderError)
    device = _resolve_device(spec.device)
    check_reachable(spec)
    try:
        config = AutoConfig.from_pretrained(spec.model, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_failure(spec, "config", exc) from exc
    model_type = getattr(config, "model_type", "")
    family = _FAMILIES.get(model_type)
    if family is None:
        names = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
        raise EncoderError(
            f"{spec.model}: unsupported architecture {model_type!r} ({names}); probekit supports "
            "Wav2Vec2, HuBERT, WavLM, Data2VecAudio and Whisper checkpoints"
        )
    total = int(config.encoder_layers if family == "whisper" else config.num_hidden_layers)
    if spec.max_layer is not None and not 0 <= spec.max_layer <= total:
        raise EncoderError(f"max_layer {spec.max_layer} is outside 0..{total} for {spec.model} ({total} layers)")

    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(
            spec.model, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        if family == "whisper":
            raise _load_failure(spec, "feature extractor (preprocessor_config.json)", exc) from exc
        # Some wav2vec2-family checkpoints ship no preprocessor config: the library default
        # (16 kHz, per-segment normalisation) is what they were trained with.
        feature_extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)

    # probekit draws its own progress bar over the audio; transformers' per-tensor loading bar
    # would interleave with it and tells the user nothing they need.
    transformers.utils.logging.disable_progress_bar()
    try:
        # float32 whatever the checkpoint's dtype: float16 matmuls are slow or missing on CPU and
        # on CUDA autocast picks half precision where it is safe.
        model = AutoModel.from_pretrained(
            spec.model, revision=spec.revision, config=config, dtype=torch.float32, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise _load_failure(spec, "weights", exc) from exc
    if family == "whisper":
        # Only the encoder is kept and run; the decoder is dropped here.
        model = model.get_encoder()
    model.eval()
    _truncate(model, family, spec.max_layer)
    model.to(device)

    local = Path(spec.model).is_dir()
    identity = {
        "encoder": spec.model,
        "revision": spec.revision or "",
        "commit": _local_weights_hash(Path(spec.model)) if local else _hub_commit(spec.model, spec.revision),
        "config_hash": _config_hash(config),
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "whisper_mode": spec.whisper_mode if family == "whisper" else "",
        "sample_rate": str(int(feature_extractor.sampling_rate)),
        "device": str(device),
    }
    if spec.max_layer is not None:
        identity["max_layer"] = str(spec.max_layer)
    return Encoder(spec, family, model, feature_extractor, config, device, identity)


def _truncate(model, family: str, max_layer: int | None) -> None:
    """Drop the layers after ``max_layer`` so they are never computed."""
    if max_layer is None:
        return
    layers = model.layers if family == "whisper" else model.encoder.layers
    if max_layer >= len(layers):
        return
    # HF records hidden states by hooking the layers, so one layer must remain even for
    # max_layer = 0 (its output is then discarded).
    kept = torch.nn.ModuleList(list(layers)[: max(max_layer, 1)])
    if family == "whisper":
        model.layers = kept
        # HF applies the final layer norm to the last hidden state; a truncated stack's last
        # state is an inner layer's output, which has no such norm.
        model.layer_norm = torch.nn.Identity()
    else:
        model.encoder.layers = kept
