"""Write an ImageFolder tree of photo-like JPEGs, for measuring the `data=imagefolder` input path.

    python scripts/make_jpeg_tree.py --out /tmp/jpegs                    # 2,000 images, 10 classes
    python scripts/make_jpeg_tree.py --out /tmp/jpegs --n 300 --classes 4
    python scripts/make_jpeg_tree.py --out /tmp/in100 --n 1000 --classes 100 --val 0   # ImageNet-100-shaped

Images are ImageNet-like in size and in what a JPEG decoder has to do with them: about 500x375
(a quarter portrait), smooth colour gradients, a few filled shapes with soft edges, and sensor-like
noise, saved at quality 90 with 4:2:0 chroma subsampling. Layout: OUT/train/<class>/*.jpg and
OUT/val/<class>/*.jpg (``--val`` images per class), so `data=imagefolder data.root=OUT` reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.jpeg_tree import write_tree  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="root of the tree to write")
    parser.add_argument("--n", type=int, default=2000, help="training images in all")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--val", type=int, default=5, help="validation images per class")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.classes < 1 or args.val < 0 or not 1 <= args.quality <= 95:
        parser.error("need --n >= 1, --classes >= 1, --val >= 0 and --quality in 1..95")
    written = write_tree(args.out, args.n, args.classes, args.val, args.quality, args.seed)
    print(f"wrote {written} JPEGs under {args.out} (train/ and val/, {args.classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
