import json
import zlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from condgen.errors import CondgenError
from condgen.tensorfile import BYTE_PLANES, CHANNEL_CODES, read_tensors, save_tensors


def weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(64, 32, 3, 3, generator=generator) * 0.05,
        "norm.bias": torch.randn(64, generator=generator),
        "scale": torch.tensor(0.7),
        "steps": torch.tensor(12, dtype=torch.int64),
    }


def test_half_round_trip_is_float16_bit_for_bit_and_keeps_integers(tmp_path):
    tensors = weights()
    save_tensors(tensors, tmp_path / "w.safetensors", {"objects": "[]"}, half=True)
    loaded, metadata = read_tensors(tmp_path / "w.safetensors")
    assert metadata["objects"] == "[]"
    assert sorted(json.loads(metadata[BYTE_PLANES])) == ["conv.weight", "norm.bias", "scale"]
    for name, tensor in tensors.items():
        expected = tensor.half() if tensor.is_floating_point() else tensor
        assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected)


def test_packed_file_is_plain_safetensors_of_two_byte_planes(tmp_path):
    save_tensors(weights(), tmp_path / "w.safetensors", half=True)
    raw = load_file(tmp_path / "w.safetensors")
    assert raw["conv.weight"].dtype == torch.uint8 and raw["conv.weight"].shape == (2, 64, 32, 3, 3)
    assert raw["scale"].shape == (2,) and raw["steps"].dtype == torch.int64


def test_byte_planes_deflate_smaller_than_interleaved_float16(tmp_path):
    tensors = {"w": torch.randn(256, 256, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.02}
    save_tensors(tensors, tmp_path / "planes.safetensors", half=True)
    save_tensors({"w": tensors["w"].half()}, tmp_path / "interleaved.safetensors")
    planes, interleaved = (
        zlib.compress((tmp_path / f"{n}.safetensors").read_bytes()) for n in ("planes", "interleaved")
    )
    assert len(planes) < 0.95 * len(interleaved)


def test_full_precision_files_are_stored_as_they_are(tmp_path):
    save_tensors(weights(), tmp_path / "w.safetensors")
    loaded, metadata = read_tensors(tmp_path / "w.safetensors")
    assert BYTE_PLANES not in metadata and loaded["conv.weight"].dtype == torch.float32
    assert torch.equal(loaded["conv.weight"], weights()["conv.weight"])


def test_damaged_files_are_one_line_errors_naming_them(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(weights(), path, {BYTE_PLANES: '["absent"]'})
    with pytest.raises(CondgenError, match=f"{path}: damaged {BYTE_PLANES} metadata"):
        read_tensors(path)
    save_tensors(weights(), path, half=True)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CondgenError, match=f"{path}: truncated or corrupt"):
        read_tensors(path)
    with pytest.raises(CondgenError, match="not found"):
        read_tensors(tmp_path / "missing.safetensors")


def test_channel_codes_round_trip_within_half_a_step_per_channel_and_keep_the_rest_float16(tmp_path):
    tensors = weights()
    save_tensors(tensors, tmp_path / "w.safetensors", {"objects": "[]"}, bits=6)
    raw = load_file(tmp_path / "w.safetensors")
    assert raw["conv.weight"].dtype == torch.int8 and raw["conv.weight"].abs().max() <= 31
    assert raw["conv.weight.channel_scale"].shape == (64,) and raw["conv.weight.channel_scale"].dtype == torch.float32
    loaded, metadata = read_tensors(tmp_path / "w.safetensors")
    assert json.loads(metadata[CHANNEL_CODES]) == {"bits": 6, "names": ["conv.weight"]}
    assert set(loaded) == set(tensors) and loaded["conv.weight"].dtype == torch.float16
    largest = tensors["conv.weight"].abs().amax(dim=(1, 2, 3))
    step = largest / 31  # each output channel its own step
    error = (loaded["conv.weight"].float() - tensors["conv.weight"]).abs().amax(dim=(1, 2, 3))
    assert (error <= step / 2 + largest * 2**-11).all() and (error > step / 4).all()  # and float16's own rounding
    assert torch.equal(loaded["norm.bias"], tensors["norm.bias"].half())  # not coded: float16, bit for bit
    assert torch.equal(loaded["steps"], tensors["steps"])


def test_fewer_bits_deflate_smaller_and_a_bad_count_or_damaged_header_is_one_line(tmp_path):
    big = {"w": torch.randn(256, 256, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.02}
    sizes = {}
    for bits in (None, 8, 6):
        save_tensors(big, tmp_path / f"{bits}.safetensors", half=True, bits=bits)
        sizes[bits] = len(zlib.compress((tmp_path / f"{bits}.safetensors").read_bytes()))
    assert sizes[6] < sizes[8] < 0.6 * sizes[None]
    with pytest.raises(CondgenError, match="codes of 9 bits; choose 4 to 8"):
        save_tensors(big, tmp_path / "nine.safetensors", bits=9)
    assert not (tmp_path / "nine.safetensors").exists()
    coded = load_file(tmp_path / "8.safetensors")
    save_file(coded, tmp_path / "damaged.safetensors", metadata={CHANNEL_CODES: '{"bits": 8, "names": ["x"]}'})
    with pytest.raises(CondgenError, match=r"damaged\.safetensors: damaged channel_codes metadata \(KeyError\)"):
        read_tensors(tmp_path / "damaged.safetensors")
