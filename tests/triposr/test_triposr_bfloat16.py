"""bfloat16 encoding (issue 16): the fidelity guard against float32 on bench_chair, which parts
are stored in which dtype, and a loader that does not keep the float32 copy of what it converts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.fidelity import MIN_OCCUPANCY_IOU, chair_occupancy
from recond.triposr import loader
from recond.triposr.model import ENCODER_PARTS, TripoSR
from recond.triposr.preprocess import prepare_image
from recond.triposr.tiny import reference_picture



def test_bfloat16_occupancy_agrees_with_float32_on_bench_chair(shared_dir: Path) -> None:
    exact, iou = chair_occupancy(shared_dir, torch.bfloat16)
    assert exact.sum() > 0.005 * exact.size  # a chair (1.3% of the box), not an empty one
    assert iou >= MIN_OCCUPANCY_IOU, f"bfloat16 occupancy IoU {iou:.4f} against float32"


def test_only_the_encoder_parts_are_stored_in_bfloat16(tiny_model_dir: Path) -> None:
    model = TripoSR.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    dtypes = {name: parameter.dtype for name, parameter in model.named_parameters()}
    assert {dtypes[name] for name in dtypes if name.startswith(ENCODER_PARTS)} == {torch.bfloat16}
    assert {dtypes[name] for name in dtypes if not name.startswith(ENCODER_PARTS)} == {torch.float32}
    assert any(name.startswith("decoder.") for name in dtypes)
    scene_code = model.encode([prepare_image(reference_picture())])[0]
    out = model.query(scene_code, torch.rand(64, 3) - 0.5)
    assert scene_code.dtype == out["density_act"].dtype == out["color"].dtype == torch.float32


def test_converted_tensors_leave_no_mapped_float32_pages_behind(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    megabytes = 32
    torch.save({"encoder": torch.rand(megabytes * 2 ** 18), "decoder": torch.rand(1000)}, path)
    state = torch.load(path, weights_only=True, mmap=True)
    state["encoder"].sum()  # every page of the float32 tensor resident, as a conversion leaves it
    assert resident_kib_of(path) >= megabytes * 1024
    converted = loader.store_as(state, lambda key: torch.bfloat16 if key == "encoder" else torch.float32)
    assert converted["encoder"].dtype == torch.bfloat16 and converted["decoder"].dtype == torch.float32
    assert converted["encoder"].untyped_storage().nbytes() == megabytes * 2 ** 19
    assert resident_kib_of(path) < 64  # the decoder's page(s) only
    expected = torch.load(path, weights_only=True)
    assert torch.equal(converted["encoder"], expected["encoder"].to(torch.bfloat16))
    assert torch.equal(converted["decoder"], expected["decoder"])


def resident_kib_of(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps, Linux)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        pytest.skip("needs Linux's /proc/self/smaps")
    total, inside = 0, False
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total
