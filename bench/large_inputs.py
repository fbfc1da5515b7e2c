"""Benchmark 5: load + preprocess of large DICOM radiographs against pydicom's decode alone.

The floor is what pydicom itself needs to hand over the pixels: ``dcmread`` of the bytes
and ``Dataset.pixel_array`` (a copy for uncompressed data, a JPEG 2000 decode for the twin).
Ours is :func:`core.io.load_scan` on the same bytes plus the model pipeline to the tensor.
"""

from __future__ import annotations

import io

from bench.common import Row, side_by_side
from bench.explain_latency import scan_bytes

FILES = {"RG1_UNCI.dcm": "uncompressed, 1955 x 1841, 15-bit", "RG1_J2KR.dcm": "JPEG 2000 lossless twin"}


def run(loaded, *, repeats: int, log=print) -> tuple[list[Row], dict]:
    import pydicom
    from skimage.transform import resize as sk_resize

    from core.io import load_scan
    from core.preprocess import resize

    rows, details = [], {}
    for name, what in FILES.items():
        data = scan_bytes(name)
        scan = load_scan(data, name)

        def floor():
            return pydicom.dcmread(io.BytesIO(data)).pixel_array

        def ours():
            return loaded.pipeline.scan_tensor(load_scan(data, name))

        steps = loaded.pipeline.scan_trace(scan).steps
        before_resize = next(s for i, s in enumerate(steps) if steps[i + 1].name == "resize").output

        def resize_skimage():  # the resize step as it was: skimage on the whole radiograph
            return sk_resize(before_resize, (size, size), order=1, anti_aliasing=True, preserve_range=True)

        size = loaded.pipeline.input_size
        times = side_by_side({"pydicom": floor, "ours": ours, "load_scan": lambda: load_scan(data, name),
                              "pipeline": lambda: loaded.pipeline.scan_tensor(scan),
                              "resize": lambda: resize(before_resize, size=size),
                              "resize (skimage, before)": resize_skimage},
                             repeats=max(3, repeats // 2), warmup=1)
        log(f"  {name}: pydicom {times['pydicom'] * 1000:.0f} ms, load_scan {times['load_scan'] * 1000:.0f} ms, "
            f"pipeline {times['pipeline'] * 1000:.0f} ms, together {times['ours'] * 1000:.0f} ms; resize step "
            f"{times['resize'] * 1000:.1f} ms, skimage {times['resize (skimage, before)'] * 1000:.1f} ms")
        rows.append(Row("5 large input", f"{name} ({what}) load + preprocess", times["ours"], "s",
                        times["pydicom"], "pydicom pixel_array", "",
                        extra={"load_scan_seconds": times["load_scan"], "pipeline_seconds": times["pipeline"],
                               "shape": list(scan.shape)}))
        rows.append(Row("5 large input", f"{name}: resize step, ours vs skimage (before)", times["resize"], "s",
                        times["resize (skimage, before)"], "skimage resize", ""))
        details[name] = times
    return rows, details
