"""Does a brain model read the source collection instead of the slice? (issue 12's shortcut hunt.)

The brain training folder combines three collections (figshare, SARTAJ, Br35H; ``../shared/data/README.md``) whose
JPEGs differ in colour mode: the figshare slices are stored grey (mode ``L``), most of the others as RGB. The mode
follows the class: 91% of glioma images are grey, 98% of tumour-free ones RGB. The model's pipeline turns every
image grey, but a collection also has its own look (contrast, sequences, resolution), which a model can learn in
place of the tumour. If it did, the images of a class stored in the other mode (the grey tumour-free slices, the RGB
gliomas) would be the ones it gets wrong.

For each model folder given, its own validation images are scored by class and colour mode (accuracy and the
answers given), and beside them the training images of the rare mode of each class, which the model has seen
(a model that cannot fit them leans on the mode's look even in training).

    python scripts/source_check.py assets/models/brain_mri [MORE_MODEL_FOLDERS] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from core.data import validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.model import load_model  # noqa: E402

IMAGES = Path("../shared/data/brain_mri/Training")


def colour_mode(path: Path) -> str:
    """``grey`` or ``colour``: how the JPEG stores its pixels (read from its header, no decoding)."""
    with Image.open(path) as image:
        return "grey" if image.mode in ("L", "I;16", "I") else "colour"


def source_table(folder: str, images: Path = IMAGES, limit: int | None = None) -> dict:
    """Accuracy by (part, class, mode) of one model folder: ``part`` is ``validation`` (its own split.json) or
    ``training, rare mode`` (the training images stored in the mode its class rarely has). At most ``limit``
    images per row when given."""
    loaded = load_model(folder)
    names = list(loaded.class_names)
    validation = set(validation_keys(folder))
    files = {name: sorted(p for p in (images / name).iterdir() if p.is_file()) for name in names}
    modes = {name: {p: colour_mode(p) for p in paths} for name, paths in files.items()}
    rows: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name in names:
        usual = Counter(modes[name].values()).most_common(1)[0][0]
        for path in files[name]:
            mode = modes[name][path]
            part = "validation" if f"{name}/{path.name}" in validation else "training, rare mode"
            if part != "validation" and mode == usual:
                continue
            key = (part, name, mode)
            if limit is not None and len(rows[key]) >= limit:
                continue
            tensor = loaded.pipeline.scan_tensor(load_scan(path.read_bytes(), path.name))
            rows[key].append(names[int(np.argmax(loaded.predict(tensor)[0]))])
    share = {name: {m: round(sum(v == m for v in modes[name].values()) / len(modes[name]), 3)
                    for m in ("grey", "colour")} for name in names}
    return {"model": folder, "images": str(images), "mode_share": share,
            "rows": [{"part": part, "class": name, "mode": mode, "n": len(answers),
                      "accuracy": round(sum(a == name for a in answers) / len(answers), 4),
                      "answers": dict(Counter(answers).most_common())}
                     for (part, name, mode), answers in sorted(rows.items())]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="brain model folders")
    parser.add_argument("--images", default=str(IMAGES), help="the brain training folder (class subfolders)")
    parser.add_argument("--limit", type=int, help="at most N images per row (a quick look)")
    parser.add_argument("--json", help="also write the tables to this file")
    args = parser.parse_args(argv)
    tables = [source_table(folder, Path(args.images), args.limit) for folder in args.models]
    for table in tables:
        print(f"\n{table['model']}: colour modes by class "
              + "; ".join(f"{c} {s['grey']:.0%} grey" for c, s in table["mode_share"].items()))
        print("| images | class | JPEG mode | n | accuracy | answers |\n|---|---|---|---|---|---|")
        for row in table["rows"]:
            answers = ", ".join(f"{k} {v}" for k, v in row["answers"].items())
            print(f"| {row['part']} | {row['class']} | {row['mode']} | {row['n']} | {row['accuracy']:.3f} | {answers} |")
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
