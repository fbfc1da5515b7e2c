"""Benchmark 1: saliency maps against one forward pass, and the whole Explain request.

One preprocessed scan (RG1_UNCI.dcm, a 1955 x 1841 radiograph), the committed model, warm.
Each method is timed through the model's :class:`core.saliency.Explainer` (the product path),
beside tf-keras-vis itself (:func:`core.saliency.reference_map`, the "before"), beside one
forward pass.

The forward pass is the compiled one (``tf.function`` of ``model(x)``, what
``LoadedModel.predict`` runs), the fastest single pass this model has: the honest
denominator for "how close to its limit". An eager Keras call is reported beside it.
"""

from __future__ import annotations

import numpy as np

from bench.common import Row, first_call, side_by_side

SCAN = "RG1_UNCI.dcm"


def scan_bytes(name: str = SCAN) -> bytes:
    import warnings

    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open(get_testdata_file(name), "rb").read()


def run(loaded, *, repeats: int, log=print) -> tuple[list[Row], dict]:
    import tensorflow as tf

    from core import saliency as ex
    from core.io import load_scan

    data = scan_bytes()
    scan = load_scan(data, SCAN)
    x = loaded.pipeline.scan_tensor(scan)
    target = loaded.decide(loaded.predict(x)[0])
    layer = loaded.last_conv
    model = loaded.model
    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    x_tensor = tf.constant(x)

    def layer_of(method):
        return layer if method in ex.CAM_METHODS else None

    # One-off costs, in a process that has not explained anything yet.
    cold = {}
    for method in ex.METHODS:
        cold[method] = first_call(lambda: loaded.explainer.saliency(x, method, target, layer_of(method)))
    log("  first call per method (builds the clone, traces the compiled path): "
        + ", ".join(f"{m} {t:.2f} s" for m, t in cold.items()))

    def ours(method):
        def call():
            loaded.explainer.saliency(x, method, target, layer_of(method))
        return call

    def reference(method):
        return lambda: ex.reference_map(model, x, method, target, layer_of(method))

    def forward_call():
        forward(x_tensor).numpy()

    rows, details = [], {"cold_seconds": cold, "target_class": int(target), "layer": layer}
    per_unit = {"smoothgrad": ex.SMOOTH_SAMPLES, "scorecam": ex.SCORECAM_MAX_N}
    unit_name = {"smoothgrad": "per noise sample", "scorecam": "per masked forward pass"}
    targets = {"gradcam": "<= 1.5"}
    for method, title in ex.METHODS.items():
        slow = method in per_unit
        n = max(3, repeats // 2) if slow else repeats
        times = side_by_side({"forward": forward_call, "eager": lambda: model(x, training=False).numpy(),
                              "ours": ours(method), "tf-keras-vis": reference(method)}, repeats=n, warmup=1)
        units = per_unit.get(method, 1)
        label = f"{title}" + (f" {unit_name[method]}" if slow else "")
        rows.append(Row("1 explain", label, times["ours"] / units, "s", times["forward"], "forward pass",
                        targets.get(method, ""),
                        extra={"tf_keras_vis_seconds": times["tf-keras-vis"] / units,
                               "tf_keras_vis_ratio": times["tf-keras-vis"] / units / times["forward"],
                               "eager_forward_seconds": times["eager"],
                               "ratio_to_eager_forward": times["ours"] / units / times["eager"],
                               "whole_map_seconds": times["ours"], "units": units}))
        log(f"  {label}: ours {times['ours'] / units * 1000:.1f} ms, tf-keras-vis "
            f"{times['tf-keras-vis'] / units * 1000:.1f} ms, forward {times['forward'] * 1000:.2f} ms "
            f"(eager Keras call {times['eager'] * 1000:.1f} ms)")
        details[method] = times
    rows += _request(loaded, data, scan, target, repeats=max(3, repeats // 2), forward=forward_call, log=log)
    return rows, details


def _request(loaded, data: bytes, scan, target: int, *, repeats: int, forward, log) -> list[Row]:
    """Uploaded bytes to overlay PNG bytes, ours against the previous code path, with stages."""
    from bench import plain
    from core import render
    from core import saliency as ex
    from core.io import load_scan

    def display(scan):
        return render.display_image(scan.frame(), scan.window, scan.invert, voi=scan.voi)

    def ours():
        scan = load_scan(data, SCAN)
        tensor = loaded.pipeline.scan_tensor(scan)
        result = ex.explain(loaded, tensor, scan.shape, method="gradcam", class_index=target)
        return render.png_bytes(render.overlay(display(scan), result.on_scan))

    def before():
        scan = load_scan(data, SCAN)
        tensor = loaded.pipeline.scan_tensor(scan)
        raw = ex.reference_map(loaded.model, tensor, "gradcam", target, loaded.last_conv)
        on_scan = plain.to_geometry_skimage(raw, scan.shape)
        picture = plain.overlay_repeat(display(scan), on_scan)
        return plain.png_default(picture)

    times = side_by_side({"forward": forward, "ours": ours, "before": before}, repeats=repeats, warmup=1)

    # Where the time goes (ours), each stage on its own.
    x = loaded.pipeline.scan_tensor(scan)
    raw = loaded.explainer.saliency(x, "gradcam", target, loaded.last_conv)
    background = display(scan)
    on_scan = ex.to_geometry(raw, scan.shape)
    picture = render.overlay(background, on_scan)

    def map_only():
        loaded.explainer.saliency(x, "gradcam", target, loaded.last_conv)

    stages = side_by_side({
        "load_scan": lambda: load_scan(data, SCAN),
        "pipeline": lambda: loaded.pipeline.scan_tensor(scan),
        "map": map_only,
        "to_geometry": lambda: ex.to_geometry(raw, scan.shape),
        "to_geometry (skimage, before)": lambda: plain.to_geometry_skimage(raw, scan.shape),
        "display_image": lambda: display(scan),
        "overlay": lambda: render.overlay(background, on_scan),
        "overlay (before)": lambda: plain.overlay_repeat(background, on_scan),
        "png_bytes (Pillow, zlib 1)": lambda: render.png_bytes(picture),
        "png (Pillow default, before)": lambda: plain.png_default(picture),
    }, repeats=repeats, warmup=1)
    sizes = {"png_bytes": len(render.png_bytes(picture)), "png_pillow_default_bytes": len(plain.png_default(picture))}
    log("  Explain request stages: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items()))
    return [
        Row("1 explain", "whole Explain request, bytes to overlay PNG (Grad-CAM)", times["ours"], "s",
            times["forward"], "forward pass", "",
            note="dominated by full-resolution image work, not by the model; see stages",
            extra={"stages_seconds": stages, "before_seconds": times["before"], **sizes}),
        Row("1 explain", "whole Explain request: ours vs the previous code path", times["ours"], "s",
            times["before"], "before", "", extra={}),
        Row("1 explain", "overlay PNG encoding (on a download click): Pillow zlib level 1 vs Pillow's default",
            stages["png_bytes (Pillow, zlib 1)"], "s", stages["png (Pillow default, before)"],
            "Pillow default", "", extra={"ours_bytes": sizes["png_bytes"],
                                         "pillow_default_bytes": sizes["png_pillow_default_bytes"]}),
    ]
