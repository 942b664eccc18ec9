"""Regenerate the sample images in this folder (deterministic; run from the repo root).

    python sample_data/make_samples.py

- nuclei.tif: 512 x 512 uint16 synthetic fluorescence nuclei (+ nuclei_truth.tif, its labels)
- nuclei_stack.tif: (5, 256, 256) uint16 stack of nuclei fields (Z) (+ nuclei_stack_truth.tif)
- shapes_rgb.tif: 256 x 256 RGB uint8 image of generic shapes
"""

from pathlib import Path

import numpy as np
import tifffile

from napari_sam.training.geo_scene import GeoScene
from napari_sam.training.synthetic import generate_sample, nuclei_image, sample_rng, to_dtype

HERE = Path(__file__).resolve().parent


def main() -> None:
    img, lab = nuclei_image(seed=7, size=(512, 512), dtype="uint16")
    tifffile.imwrite(HERE / "nuclei.tif", img, compression="zlib", resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"unit": "um"})
    tifffile.imwrite(HERE / "nuclei_truth.tif", lab.astype(np.uint16), compression="zlib")
    stack, truth = zip(*(nuclei_image(seed=100 + z, size=(256, 256), dtype="uint16")
                         for z in range(5)))
    tifffile.imwrite(HERE / "nuclei_stack.tif", np.stack(stack), compression="zlib",
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(HERE / "nuclei_stack_truth.tif", np.stack(truth).astype(np.uint16),
                     compression="zlib", metadata={"axes": "ZYX"})
    rng = sample_rng(5, 0)
    rgb, _ = generate_sample(rng, (256, 256), kind="shapes")
    tifffile.imwrite(HERE / "shapes_rgb.tif", to_dtype(rgb, "uint8"), photometric="rgb",
                     compression="zlib")
    scene = GeoScene((256, 256), seed=5, field_size=56)  # 4 bands, UTM 33N, nodata border
    scene.write_geotiff(HERE / "geo_scene.tif", overwrite=True)
    tifffile.imwrite(HERE / "geo_scene_truth.tif", scene.labels().astype(np.uint16),
                     compression="zlib")


if __name__ == "__main__":
    main()
