"""The catalogue of downloadable checkpoints: where each file lives, its published hash and
size, its architecture and whether it holds an instance decoder (`hub.fetch` downloads and
verifies them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class KnownCheckpoint:
    """One entry of `KNOWN_CHECKPOINTS` (the field comments say more).

    Parameters
    ----------
    name, url, arch, filename, description, instance_decoder : str
    sha256, xxh128 : str or None
    size : int or None
    """

    name: str
    url: str
    sha256: Optional[str]
    size: Optional[int]  # bytes, None where no public source states it
    arch: str  # "vit_b", "vit_l", "vit_h", "vit_t" or a SAM 2.1 name ("sam2.1_hiera_tiny", ...)
    filename: str
    description: str = ""
    xxh128: Optional[str] = None  # micro-sam's own hash, checked only if `xxhash` is installed
    # instance decoder in the file: "unetr" (micro-sam's `decoder_state`, see
    # model/unetr_decoder.py) or "" (none: grid automask only)
    instance_decoder: str = ""


_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_MICRO_SAM = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"

KNOWN_CHECKPOINTS: Dict[str, KnownCheckpoint] = {k.name: k for k in (
    # Meta's SAM files (vit_b, vit_l, vit_h). URL + SHA-256: computational-cell-analytics/micro-sam
    # micro_sam/util.py (its pooch registry before the switch to xxh128, e.g. commit 4d7a4066).
    # Sizes: dafne-imaging/dafne src/dafne/utils/sam_mask_refine.py (CHECKPOINT_MODELS). URLs also
    # in facebookresearch/segment-anything README; hash + size pairs agree with several other
    # public manifests found through the code index.
    KnownCheckpoint(
        "vit_b", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383,
        "vit_b", "sam_vit_b_01ec64.pth", "Segment Anything ViT-B (Meta)"),
    KnownCheckpoint(
        "vit_l", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607,
        "vit_l", "sam_vit_l_0b3195.pth", "Segment Anything ViT-L (Meta)"),
    KnownCheckpoint(
        "vit_h", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879,
        "vit_h", "sam_vit_h_4b8939.pth", "Segment Anything ViT-H (Meta)"),
    # File: weights/mobile_sam.pt in ChaoningZhang/MobileSAM (README.md loads it from there).
    # SHA-256: computational-cell-analytics/micro-sam micro_sam/util.py ("vit_t", the same
    # weights mirrored on owncloud.gwdg.de). This hash together with this URL and the size
    # 40728226 also appears in several public manifests found through the code index (the index
    # did not name their repositories).
    KnownCheckpoint(
        "vit_t", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", 40728226,
        "vit_t", "mobile_sam.pt", "MobileSAM: TinyViT encoder, SAM decoder"),
    # SAM 2.1 (Meta, release 092824). URLs: facebookresearch/sam2 checkpoints/download_ckpts.sh
    # (SAM2p1_BASE_URL), repeated in many projects found through the code index. SHA-256:
    # computational-cell-analytics/micro-sam micro_sam util ("sam2.1": hvit_t/s/b/l), the
    # same four digests pinned next to these URLs in several other public projects. Sizes:
    # public manifests found through the code index (tiny in two of them; small, base+ and
    # large in one each); the download also checks the hash, so a wrong size only fails early.
    KnownCheckpoint(
        "sam2.1_hiera_tiny", f"{_SAM2}/sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
        "sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt", "SAM 2.1 Hiera-T (Meta): images and stacks"),
    KnownCheckpoint(
        "sam2.1_hiera_small", f"{_SAM2}/sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285,
        "sam2.1_hiera_small", "sam2.1_hiera_small.pt", "SAM 2.1 Hiera-S (Meta)"),
    KnownCheckpoint(
        "sam2.1_hiera_base_plus", f"{_SAM2}/sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802,
        "sam2.1_hiera_base_plus", "sam2.1_hiera_base_plus.pt", "SAM 2.1 Hiera-B+ (Meta)"),
    KnownCheckpoint(
        "sam2.1_hiera_large", f"{_SAM2}/sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611,
        "sam2.1_hiera_large", "sam2.1_hiera_large.pt", "SAM 2.1 Hiera-L (Meta)"),
    # URL + xxh128: computational-cell-analytics/micro-sam micro_sam/v1/util.py, models() (model
    # zoo version 1.2; commit 087172c5). The same three URL/xxh128 pairs are hard-coded in another
    # public project found through the code index. micro-sam publishes no SHA-256 and no size
    # for these files, so both stay None (see the module docstring for how they are verified).
    KnownCheckpoint(
        "vit_b_lm", f"{_MICRO_SAM}/diplomatic-bug/1.2/files/vit_b.pt", None, None, "vit_b",
        "micro_sam_vit_b_lm.pt", "micro-sam ViT-B, light microscopy (cells, nuclei)",
        xxh128="fe9252a29f3f4ea53c15a06de471e186", instance_decoder="unetr"),
    KnownCheckpoint(
        "vit_l_lm", f"{_MICRO_SAM}/idealistic-rat/1.2/files/vit_l.pt", None, None, "vit_l",
        "micro_sam_vit_l_lm.pt", "micro-sam ViT-L, light microscopy (cells, nuclei)",
        xxh128="017f20677997d628426dec80a8018f9d", instance_decoder="unetr"),
    KnownCheckpoint(
        "vit_b_em_organelles", f"{_MICRO_SAM}/noisy-ox/1.2/files/vit_b.pt", None, None, "vit_b",
        "micro_sam_vit_b_em_organelles.pt", "micro-sam ViT-B, electron microscopy organelles",
        xxh128="f3bf2ed83d691456bae2c3f9a05fb438", instance_decoder="unetr"),
)}
