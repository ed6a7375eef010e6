"""``data.decode_device=cuda``: JPEG batches decoded on the GPU (torchvision.io.decode_jpeg with
device="cuda") for runs without a cache; refused in one line where it cannot run."""

from __future__ import annotations

import pytest
import torch

from sslkit.data.imagefolder import ImageFolder
from sslkit.errors import ConfigError
from tests.test_cache import jpeg_tree

CUDA = torch.cuda.is_available()


def test_a_bad_decode_device_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        ImageFolder(root="x", decode_device="gpu")
    assert str(err.value) == "data.decode_device='gpu'; choose one of cpu, cuda"
    with pytest.raises(ConfigError) as err:
        ImageFolder(root="x", decode_device="cuda", cache=True)
    assert str(err.value).startswith("data.decode_device=cuda decodes the JPEGs of runs without a cache; ")


@pytest.mark.skipif(CUDA, reason="a CUDA device is present")
def test_decoding_on_the_gpu_without_one_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        ImageFolder(root="x", decode_device="cuda")
    assert str(err.value) == ("data.decode_device=cuda: no CUDA device here; decode on the CPU "
                              "(data.decode_device=cpu) or decode once into a cache (data.cache=true)")


def test_the_batched_decode_path_on_the_cpu_equals_the_per_item_reader(tmp_path):
    """The GPU reader's code (file reading, JPEG detection, batched decode_jpeg, the non-JPEG
    fallback, the reader's transform, subsets and fields) run with device="cpu", where decode_jpeg
    is libjpeg-turbo as the per-item reader's: the same bytes."""
    from PIL import Image

    from sslkit.data.decode import DeviceDecoded
    from sslkit.data.imagefolder import FolderImages

    root = jpeg_tree(tmp_path / "jpegs")
    Image.new("RGB", (33, 21), (200, 10, 40)).save(root / "train" / "class_1" / "a_png.png")
    items = FolderImages(root / "train", 20)
    items.fields["domain"] = torch.arange(len(items)) % 2
    batched = DeviceDecoded(items, "cpu")
    order = [12, 0, 4, 5, 3]  # 4: the PNG (sorted first in class_1), decoded by the fallback
    assert items.samples[4][0].suffix == ".png"
    batch = batched.__getitems__(order)
    assert torch.equal(batch["image"], torch.stack([items[i]["image"] for i in order]))
    assert torch.equal(batch["label"], items.labels[order]) and batch["domain"].tolist() == [0, 0, 0, 1, 1]
    part = batched.subset(torch.tensor([12, 3]))
    assert torch.equal(part.__getitems__([0, 1])["image"], batch["image"][[0, 4]])
    assert part.origin.tolist() == [12, 3] and part.classes == items.classes


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: data.decode_device=cuda decodes with "
                                     "torchvision.io.decode_jpeg(device='cuda')")
def test_gpu_decoded_batches_match_the_cpu_path(tmp_path):
    root = jpeg_tree(tmp_path / "jpegs")
    from PIL import Image

    Image.new("RGB", (33, 21), (200, 10, 40)).save(root / "train" / "class_0" / "not_a_jpeg.png")
    kw = dict(root=str(root), image_size=16, load_size=20, val_size=2, batch_size=4, num_workers=2)
    cpu, gpu = ImageFolder(**kw), ImageFolder(**kw, decode_device="cuda")
    cpu.setup("fit")
    gpu.setup("fit")
    assert gpu.num_workers == 0 and not gpu.pin_memory
    for split in ("pretrain", "validation", "test"):
        a = next(iter(cpu.loader(cpu.split(split), 64, False, False)))
        b = next(iter(gpu.loader(gpu.split(split), 64, False, False)))
        assert b["image"].device.type == "cuda" and b["image"].dtype == torch.uint8
        assert b["image"].shape == a["image"].shape and torch.equal(b["label"], a["label"])
        diff = (b["image"].cpu().float() - a["image"].float()).abs()
        # nvJPEG and libjpeg-turbo differ by rounding in some pixels, never by content
        assert diff.mean() < 1.5 and diff.max() <= 40, (split, diff.mean(), diff.max())
