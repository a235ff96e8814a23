"""Reads sources.yaml and writes the embedded miniature: a tiny stand-in for every upstream file."""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image, ImageEnhance

from llava_data.common import StageError
from llava_data.imageindex import hash_image
from llava_data.layout import (
    TreeSpec,
    choose_prefix,
    member_name,
    select_members,
    tar_entries,
    tree_specs,
)
from llava_data.parts import listing_text
from miniature import evalsets, pictures

MINI_PREFIX = "miniature/upstream/"
IMAGE_TOKEN = "<image>"
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
OPTION_ANSWER = "\nAnswer with the option's letter from the given choices directly."

ZIP_DATE = (2020, 1, 1, 0, 0, 0)
FILE_ATTR = 0o100644 << 16
DIR_ATTR = (0o40755 << 16) | 0x10
SAVE_OPTIONS = {"JPEG": {"quality": 75, "optimize": False}, "PNG": {"optimize": False}, "GIF": {}}
FORMAT_OF_SUFFIX = {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF"}

# ---- image ids: upstream naming schemes ------------------------------------------------
PRETRAIN_IDS = (
    "000466761",
    "001163722",
    "001894390",
    "002239345",
    "002695271",
    "003846722",
    "004062534",
    "004539375",
)
CC3M_IDS = tuple(f"GCC_train_{n:09d}" for n in (0, 6, 120, 2582, 123456, 2582585))
COCO_IDS = tuple(f"{n:012d}" for n in (9, 25, 30, 34, 36, 42, 49, 33471))
GQA_IDS = ("2331819", "2354786", "2368310", "2375429", "2410134")
TEXTVQA_IDS = ("0054c91397f2fe05", "00b1a8b5e8d3c1f0", "011e7e629fb9ae7b", "01c6b7a8a5e0d2f3")
# Visual Genome: folder -> ids in the archive; the first three of each are referenced.
VG_IDS = {"VG_100K": (2, 3, 4, 10), "VG_100K_2": (1, 5, 2417985, 6)}
VG_UNREADABLE = 2417985  # VG_100K_2/2417985.jpg is 40 zero bytes
# OCR-VQA: id -> (suffix in the archive, content); annotations say <id>.jpg for all.
OCR_VQA_MEMBERS = {
    "0001050230": (".jpg", "JPEG"),
    "0060525614": (".jpg", "JPEG"),
    "0140296476": (".jpg", "GIF"),
    "0345391802": (".jpg", "PNG"),
    "0486275590": (".gif", "GIF"),
    "0553382047": (".png", "PNG"),
    "1563053543": (".jpg", "truncated"),
}
OCR_VQA_ABSENT = "0679722769"  # referenced, not in the archive (dead URL)
OCR_VQA_IDS = tuple(sorted([*OCR_VQA_MEMBERS, OCR_VQA_ABSENT]))
SAM_IDS = ("sa_223750", "sa_227013", "sa_230476", "sa_231894", "sa_235015")
SAM_ABSENT = "sa_235015"
# sam_images_share-sft.zip: whether its sa_*.jpg sit flat or under one folder is unverified;
# the miniature puts them under one folder whose name the layout does not know (`*/`).
SAM_FOLDER = "sam_images_share-sft/"
# SA-1B's tars (sources.sa1b, parts 000000-000002 in the miniature): sa_<n>.jpg and its
# sa_<n>.json of masks at the root. Two images are also in the 9K zip, with the same bytes
# (the pool takes them once); the others only ShareGPT4V-PT's records name.
SA1B_PARTS = {
    "sa_000000.tar": ("sa_1", "sa_2"),
    "sa_000001.tar": ("sa_11187", SAM_IDS[0]),
    "sa_000002.tar": ("sa_22262", SAM_IDS[1]),
}
SA1B_ONLY = tuple(i for ids in SA1B_PARTS.values() for i in ids if i not in SAM_IDS)
TAR_MTIME = 1577836800  # 2020-01-01, as the zips' dates
# ShareGPT4V WebData: folder -> file stems; the last of each is referenced but absent.
WEBDATA = {
    "web-celebrity": ("Gong_Li", "Salma_Hayek", "Tom_Hanks", "Choi_Min-sik"),
    "web-landmark": ("Eiffel_Tower", "Golden_Gate_Bridge", "Taj_Mahal", "Machu_Picchu"),
    "wikiart": (
        "claude-monet_water-lilies-1916",
        "katsushika-hokusai_the-great-wave-off-kanagawa",
        "vincent-van-gogh_the-starry-night-1889",
        "pablo-picasso_guernica-1937",
    ),
    "share_textvqa": (
        "0a0bc91825468c45",
        "1f6e3c2d4b5a6978",
        "3c9d8e7f6a5b4c21",
        "7e2f1a0b9c8d3e46",
    ),
}
# WebData is four zips of one Drive folder, each its own Drive file and one source;
# each zip's members sit under data/<folder>/images/.
WEBDATA_SOURCES = {
    "webdata_web_celebrity": "web-celebrity",
    "webdata_web_landmark": "web-landmark",
    "webdata_wikiart": "wikiart",
    "webdata_share_textvqa": "share_textvqa",
}
# Open-LLaVA-NeXT vqa_collection.zip: component -> (folder, file names).
VQA_COLLECTION = {
    "ai2d": ("ai2d/images/", ("0.png", "12.png", "305.png", "4901.png")),
    "chartqa": (
        "chartqa/train/png/",
        ("00006834003065.png", "41699051005347.png", "multi_col_1016.png", "two_col_100.png"),
    ),
    "docvqa": (
        "docvqa/train/documents/",
        ("ffbf0023_4.png", "ffdw0217_1.png", "fgbd0227_3.png", "fhch0224_2.png"),
    ),
    "dvqa": (
        "dvqa/images/",
        (
            "bar_train_00000000.png",
            "bar_train_00000017.png",
            "bar_train_00021553.png",
            "bar_train_00199999.png",
        ),
    ),
    "geoqa+": ("geoqa+/images/", ("10.png", "1024.png", "2557.png", "6491.png")),
    "synthdog-en": ("synthdog-en/images/", ("17.jpg", "250.jpg", "4096.jpg", "65535.jpg")),
}
# ALLaVA-Instruct-VFLAN-4V: record number -> Vision-Flan image file (real Unicode names).
VFLAN_IMAGES = {
    9: "VQA-E+visual_question_answering_574_COCO_train2014_000000119456.jpg",
    12: "VizWiz+image_captioning_VizWiz_train_00005393.jpg",
    57: "CLEVR_CoGenT+question_answer_matching_CLEVR_trainA_000412.png",
    108: "WikiArt+art_style_classification_gustave-courbet_the-café.jpg",
    233: "Wikipedia+landmark_recognition_Schloss_Schönbrunn.jpg",
    871: "Chinese_Calligraphy+character_recognition_永_0007.jpg",
    1404: "ScienceQA+multiple_choice_science_question_3041.jpg",
    2020: "GQA+question_answering_2395207.jpg",
    5120: "FairFace+age_classification_train_58291.jpg",
    20311: "TextCaps+image_captioning_0a3c3d8a3b1f9e7c.jpg",
}
# A later revision of ALLaVA-Instruct-VFLAN-4V on the Hub, the latest (the default build uses
# the first, the one mix1M was built from): records renumbered, dropped and rewritten. It lies
# in hf-revisions/<repo>/<commit>/<path> (one file per commit folder, nothing else in there);
# hf-revisions.json beside that folder gives each version's size, sha256 and differences.
ALLAVA_REPO = "FreedomIntelligence/ALLaVA-4V"
ALLAVA_PATH = "allava_vflan/ALLaVA-Instruct-VFLAN-4V.json"
ALLAVA_FIRST = {
    "revision": "58347d859e4011b11ad2f5def21c6204ab45bebf",
    "short": "58347d8",
    "date": "2024-02-28",
}
ALLAVA_LATER = {"03b71db47762d166038531bc428db17e7523c0ab": {"date": "latest", "changed": (108,)}}
ALLAVA_RENAMED = {12: "allava_vflan_inst_11", 871: "allava_vflan_inst_869"}
ALLAVA_DROPPED = (233, 5120)
ALLAVA_REWRITTEN = " On a second look, the colours and the setting confirm this answer."
REVISIONS_PREFIX = "hf-revisions/"
REVISIONS_INDEX = "hf-revisions.json"
# What mix1M does differently from the files it was built from.
MIX1M_DROPPED = ("sharegpt4v/textcaps/011e7e629fb9ae7b", "allava/57", "allava/2020")
MIX1M_CHANGED = ("sharegpt4v/sam/sa_227013", "allava/1404")
# Images the real pool holds twice, by layout path under data/: (the image it copies, how).
# exact: the same bytes; pixels: the same JPEG data with a comment added (other bytes, the
# same decoded pixels); resize (to 75 %), brightness (+15 %), jpeg (quality 40): a near
# duplicate, re-encoded.
COPIES = {
    # GQA's images are Visual Genome's
    "gqa/images/2354786.jpg": ("vg/VG_100K/2.jpg", "exact"),
    # ShareGPT4V's share_textvqa images are TextVQA's
    "share_textvqa/images/1f6e3c2d4b5a6978.jpg": (
        "textvqa/train_images/00b1a8b5e8d3c1f0.jpg",
        "exact",
    ),
    # the web holds COCO's photos too: LAION scraped one, and CC-3M and LAION share some
    "llava/llava_pretrain/images/00116/001163722.jpg": (
        "coco/train2017/000000000034.jpg",
        "pixels",
    ),
    "llava/cc3m_595k/images/GCC_train_000000120.jpg": (
        "llava/llava_pretrain/images/00046/000466761.jpg",
        "pixels",
    ),
    # Visual Genome shares half its images with COCO, at another size
    "vg/VG_100K_2/1.jpg": ("coco/train2017/000000000009.jpg", "resize"),
    # Vision-Flan's VQA-E task shows COCO images
    "allava_vflan/images/images_191task_1k/VQA-E+visual_question_answering_574_COCO_train2014_"
    "000000119456.jpg": ("coco/train2017/000000000030.jpg", "brightness"),
}
# The evaluation sets (miniature.evalsets) and the sources holding their files.
EVAL_SOURCES = {name: f"eval_{name}" for name in evalsets.EVAL_SETS}
# A declared copy is within NEAR_WITHIN bits of pHash of what it copies; any two images not
# declared the same picture are more than FAR_BEYOND bits apart (`make miniature` checks it).
NEAR_WITHIN, FAR_BEYOND = 6, 12
MIX1M_NOTE = " The picture was annotated again for Open-LLaVA-NeXT."

# ---- text pools --------------------------------------------------------------------------
CAPTIONS = (
    "a red bus parked beside a brick building",
    "two dogs playing with a ball on the grass",
    "a bowl of fruit on a wooden kitchen table",
    "a city street at night with glowing shop signs",
    "a small boat on a calm lake under a cloudy sky",
    "a child flying a kite on a sandy beach",
    "a plate of pasta next to a glass of water",
    "a man riding a bicycle past a row of shops",
)
PRETRAIN_PROMPTS = (
    "Render a clear and concise summary of the photo.",
    "Provide a brief description of the given image.",
    "Share a concise interpretation of the image provided.",
    "Write a terse but informative summary of the picture.",
)
CONVERSATION_QA = (
    ("What colour is the largest object in the image?", "It is mostly red with white details."),
    ("How many people are visible?", "Two people are visible, standing near the centre."),
    ("Where might this photo have been taken?", "It looks like a busy city street in daytime."),
    ("What is the weather like in the scene?", "The sky is overcast, so it seems cool and cloudy."),
    (
        "Is there any text visible in the image?",
        "Yes, a small sign with white letters on the left.",
    ),
    ("What are the people doing?", "They are walking along the pavement and talking."),
)
DETAIL_PROMPTS = (
    "Describe the following image.",
    "What is in the photo?",
    "Explain the visual content of the image in great detail.",
)
COMPLEX_QA = (
    ("What might be the purpose of this arrangement?", "It is likely set up for a meal: "),
    ("What challenges could someone face here?", "Someone could struggle with the crowd: "),
    ("Why might these objects be together?", "They are probably used for the same activity: "),
)
VQA_QA = (
    ("What color is the bus?", "Red"),
    ("How many dogs are there?", "2"),
    ("Is it raining?", "No"),
    ("What is on the table?", "Fruit"),
    ("What sport is being played?", "Tennis"),
    ("What is the man holding?", "Umbrella"),
)
GQA_QA = (
    ("Is the sky blue or white?", "White"),
    ("Which side of the picture is the car on?", "Left"),
    ("What is the animal on the grass?", "Dog"),
    ("Are there both fences and trees in the image?", "Yes"),
    ("What color is the shirt?", "Blue"),
)
OCR_VQA_QA = (
    ("Who wrote this book?", "Jane Austen"),
    ("What is the title of this book?", "Pride and Prejudice"),
    ("What is the genre of this book?", "Literature & Fiction"),
    ("Is this a religious book?", "No"),
    ("Is this book related to Travel?", "Yes"),
)
REFCOCO_PROMPT = (
    "Please provide the bounding box coordinate of the region this sentence describes: "
)
TEXTCAPS_PROMPT = "Provide a one-sentence caption for the provided image.\nReference OCR token: "
VG_PROMPT = "Please provide a short description for this region: "
REGIONS = ("man in red shirt", "white car on the left", "small dog", "tall lamp post")
SHAREGPT_CHATS = {
    "i6IyJda_0": (
        "How do I reverse a list in Python?",
        "Use `items.reverse()` to reverse in place, or `items[::-1]` for a reversed copy.",
    ),
    "wNBG8Gp_0": (
        "Traduis « bonjour » en espagnol.",
        "« Hola ».",
        "Et « merci » ?",
        "« Gracias ».",
    ),
    "QWJhYvA_0": ("Write a haiku about autumn.", "Red leaves drift and fall,\ncold wind hums."),
    "2Ns8Sjz_12": (
        "Continue",
        "Step 4 is to rinse the brush in warm water.",
        "And then?",
        "Let it dry flat before storing it.",
    ),
}
VQA_COLLECTION_QA = {
    "ai2d": (
        "Which stage comes after the larva?\nA. egg\nB. pupa\nC. adult\nD. nymph" + OPTION_ANSWER,
        "B",
    ),
    "chartqa": ("What is the value of the highest bar?" + SHORT_ANSWER, "42.5"),
    "docvqa": ("What is the date mentioned in this letter?" + SHORT_ANSWER, "March 3, 1998"),
    "dvqa": ("What is the label of the second bar from the left?" + SHORT_ANSWER, "cloud"),
    "geoqa+": (
        "As shown in the figure, AB is parallel to CD and angle 1 = 50°. Find angle 2.",
        "Since AB ∥ CD, angle 2 = 180° - angle 1 = 130°. The answer is 130°.",
    ),
    "synthdog-en": ("What is written in the image?", "The quick brown fox jumps over the hedge."),
}


# ---- deterministic helpers ---------------------------------------------------------------
def digest(key: str) -> bytes:
    return hashlib.sha1(key.encode("utf-8")).digest()


def choose(options, key: str):
    """One of `options`, picked by a stable hash of `key`."""
    return options[int.from_bytes(digest(key)[:4], "big") % len(options)]


def sample(options, key: str, count: int) -> list:
    """`count` distinct items of `options`, picked by a stable hash of `key`."""
    return sorted(options, key=lambda item: digest(f"{key}/{item}"))[:count]


def in_hash_order(keyed: dict[str, dict]) -> list[dict]:
    """Records in a stable shuffled order: sorted by sha1 of their key."""
    return [keyed[key] for key in sorted(keyed, key=digest)]


def box(key: str) -> str:
    """A normalised bounding box [x0, y0, x1, y1] derived from `key`."""
    d = digest(key)
    x0, y0 = d[0] % 50, d[1] % 50
    return f"[0.{x0:02d}, 0.{y0:02d}, 0.{x0 + 40 + d[2] % 10:02d}, 0.{y0 + 40 + d[3] % 10:02d}]"


# ---- images and archives -----------------------------------------------------------------
def picture(name: str) -> Image.Image:
    """A small stand-in photograph (`miniature.pictures`) whose size comes from sha1(name)."""
    d = digest(name)
    return pictures.picture(name, 48 + 16 * (d[0] % 3), 40 + 16 * (d[1] % 2))


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **(options or SAVE_OPTIONS[fmt]))
    return buffer.getvalue()


def copied(data: bytes, how: str) -> bytes:
    """A copy of the JPEG `data`, made as COPIES says."""
    if how == "exact":
        return data
    if how == "pixels":  # a COM segment after SOI: other bytes, the same pixels
        note = b"copied by the miniature"
        return data[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + data[2:]
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if how == "resize":
        size = (image.width * 3 // 4, image.height * 3 // 4)
        return encoded(image.resize(size, Image.Resampling.LANCZOS))
    if how == "brightness":
        return encoded(ImageEnhance.Brightness(image).enhance(1.15))
    if how == "jpeg":
        return encoded(image, "JPEG", quality=40)
    raise ValueError(f"unknown copy {how!r}")


def image_bytes(name: str, fmt: str) -> bytes:
    """`picture(name)` encoded as JPEG, PNG or (greyscale) GIF."""
    image = picture(name)
    if fmt == "GIF":
        image = image.convert("L")
    return encoded(image, fmt)


def member_bytes(name: str, kind: str) -> bytes:
    """Bytes of archive member `name`: an image in format `kind`, or a broken file."""
    if kind == "truncated":
        whole = image_bytes(name, "JPEG")
        return whole[: len(whole) * 6 // 10]
    if kind == "zeros":
        return bytes(40)
    return image_bytes(name, kind)


def info_zip_name(name: str) -> str:
    """`name` as Info-ZIP stores it without a UTF-8 locale: #Uxxxx / #Lxxxxxx escapes."""
    return "".join(
        c if ord(c) < 0x80 else f"#U{ord(c):04x}" if ord(c) <= 0xFFFF else f"#L{ord(c):06x}"
        for c in name
    )


def zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = 3
    info.external_attr = DIR_ATTR if name.endswith("/") else FILE_ATTR
    return info


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip of `members` plus an entry for each folder, sorted, with fixed metadata."""
    folders = {name[: i + 1] for name in members for i, c in enumerate(name) if c == "/"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(folders | set(members)):
            if name in folders:
                archive.writestr(zip_info(name), b"", compress_type=zipfile.ZIP_STORED)
            else:
                archive.writestr(
                    zip_info(name), members[name], zipfile.ZIP_DEFLATED, compresslevel=6
                )
    return buffer.getvalue()


def images(names) -> dict[str, str]:
    """Member name -> content kind, for well-formed images in the format their suffix says."""
    return {name: FORMAT_OF_SUFFIX[os.path.splitext(name)[1]] for name in names}


def archive_members() -> dict[str, dict[str, str]]:
    """Per archive source: stored member name -> content kind (see `member_bytes`)."""
    vg = {
        folder: images(f"{folder}/{n}.jpg" for n in ids if n != VG_UNREADABLE)
        for folder, ids in VG_IDS.items()
    }
    vg["VG_100K_2"][f"VG_100K_2/{VG_UNREADABLE}.jpg"] = "zeros"
    webdata = {
        source: images(f"data/{folder}/images/{stem}.jpg" for stem in WEBDATA[folder][:-1])
        for source, folder in WEBDATA_SOURCES.items()
    }
    return {
        "llava_pretrain_images": images(f"{i[:5]}/{i}.jpg" for i in PRETRAIN_IDS),
        "cc3m_595k_images": images(f"{i}.jpg" for i in CC3M_IDS),
        "coco_train2017": images(f"train2017/{i}.jpg" for i in COCO_IDS),
        "gqa_images": images(f"images/{i}.jpg" for i in GQA_IDS),
        "textvqa_train_val_images": images(f"train_images/{i}.jpg" for i in TEXTVQA_IDS),
        "vg_part1": vg["VG_100K"],
        "vg_part2": vg["VG_100K_2"],
        "ocr_vqa_images": {
            f"images/{i}{suffix}": kind for i, (suffix, kind) in OCR_VQA_MEMBERS.items()
        },
        "sam_images": images(f"{SAM_FOLDER}{i}.jpg" for i in SAM_IDS if i != SAM_ABSENT),
        **webdata,
        "vqa_collection": images(
            folder + name for folder, names in VQA_COLLECTION.values() for name in names
        ),
        "vision_flan_images": images(
            "images_191task_1k/" + info_zip_name(name) for name in VFLAN_IMAGES.values()
        ),
    }


# ---- annotation records ------------------------------------------------------------------
def record(id_, image: str | None, values) -> dict:
    """A LLaVA-format record; `values` alternate human, gpt, human, gpt..."""
    rec = {"id": id_}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = [
        {"from": "gpt" if i % 2 else "human", "value": value} for i, value in enumerate(values)
    ]
    return rec


def instruct(id_, image: str, values) -> dict:
    """An instruction record: the first human turn opens with the image token."""
    return record(id_, image, [f"{IMAGE_TOKEN}\n{values[0]}", *values[1:]])


def caption_record(id_, image: str, key: str, caption: str) -> dict:
    """A pretraining record: the human turn closes with the image token."""
    return record(id_, image, [f"{choose(PRETRAIN_PROMPTS, key)}\n{IMAGE_TOKEN}", caption])


def flat(pairs) -> list[str]:
    return [text for pair in pairs for text in pair]


def with_prefix(keyed: dict[str, dict], prefix: str) -> dict[str, dict]:
    """Copies of `keyed` with `prefix` before every image path."""
    out = {}
    for key, rec in keyed.items():
        out[key] = copy.deepcopy(rec)
        out[key]["image"] = prefix + rec["image"]
    return out


def with_note(rec: dict) -> dict:
    """A copy of `rec` whose last gpt answer says more."""
    out = copy.deepcopy(rec)
    out["conversations"][-1]["value"] += MIX1M_NOTE
    return out


def pretrain_records() -> dict[str, list[dict]]:
    captions = {i: choose(CAPTIONS, i) for i in PRETRAIN_IDS + CC3M_IDS}
    url = "http://images.example.invalid/{}.jpg".format
    return {
        "llava_pretrain_558k": [
            caption_record(i, f"{i[:5]}/{i}.jpg", i, captions[i]) for i in PRETRAIN_IDS
        ],
        "llava_pretrain_558k_meta": [
            {"id": i, "image": f"{i[:5]}/{i}.jpg", "blip_caption": captions[i], "url": url(i)}
            for i in PRETRAIN_IDS
        ],
        "cc3m_595k_chat": [caption_record(i, f"{i}.jpg", i, captions[i]) for i in CC3M_IDS],
        "cc3m_595k_metadata": [
            {
                "id": i,
                "image": f"{i}.jpg",
                "caption": captions[i].capitalize() + ".",
                "blip_caption": captions[i],
                "url": url(i),
            }
            for i in CC3M_IDS
        ],
    }


def llava_instruct_subsets() -> dict[str, dict[str, dict]]:
    """conversation_58k, detail_23k, complex_reasoning_77k, keyed by a stable key."""
    conversation = {
        f"llava/conversation/{i}": instruct(
            i, f"{i}.jpg", flat(sample(CONVERSATION_QA, i, 2 + int(i) % 2))
        )
        for i in (COCO_IDS[7], COCO_IDS[0], COCO_IDS[1])
    }
    detail = {
        f"llava/detail/{i}": instruct(
            i, f"{i}.jpg", [choose(DETAIL_PROMPTS, i), f"The image shows {choose(CAPTIONS, i)}."]
        )
        for i in (COCO_IDS[7], COCO_IDS[2])
    }
    complex_reasoning = {}
    for i in COCO_IDS[3:6]:
        question, answer = choose(COMPLEX_QA, i)
        complex_reasoning[f"llava/complex/{i}"] = instruct(
            i, f"{i}.jpg", [question, answer + choose(CAPTIONS, i) + "."]
        )
    return {
        "llava_conversation_58k": conversation,
        "llava_detail_23k": detail,
        "llava_complex_reasoning_77k": complex_reasoning,
    }


def short_answer_records(name: str, ids, prefix: str, pool, turns: int) -> dict[str, dict]:
    """Multi-turn short-answer VQA records on images `prefix<id>.jpg`."""
    keyed = {}
    for i in ids:
        pairs = sample(pool, f"{name}/{i}", turns)
        values = flat((q + SHORT_ANSWER if n == 0 else q, a) for n, (q, a) in enumerate(pairs))
        keyed[f"{name}/{i}"] = instruct(i, f"{prefix}{i}.jpg", values)
    return keyed


def aokvqa_records(ids, prefix: str) -> dict[str, dict]:
    """Multiple-choice records: the answer is the letter of the right option."""
    keyed = {}
    for i in ids:
        question, answer = choose(VQA_QA, f"aokvqa/{i}")
        options = sorted({answer, "Kite", "Phone", "Book"}, key=lambda o: digest(i + o))
        listed = "".join(f"\n{letter}. {o}" for letter, o in zip("ABCD", options, strict=True))
        letter = "ABCD"[options.index(answer)]
        keyed[f"aokvqa/{i}"] = instruct(
            i, f"{prefix}{i}.jpg", [question + listed + OPTION_ANSWER, letter]
        )
    return keyed


def refcoco_records(ids, prefix: str) -> dict[str, dict]:
    """Referring-expression records: phrase in, bounding box out."""
    keyed = {}
    for i in ids:
        pairs = [(REFCOCO_PROMPT + r + ".", box(f"{i}/{r}")) for r in sample(REGIONS, i, 2)]
        keyed[f"refcoco/{i}"] = instruct(i, f"{prefix}{i}.jpg", flat(pairs))
    return keyed


def textcaps_records(ids, prefix: str) -> dict[str, dict]:
    """Captioning records with OCR tokens in the prompt."""
    keyed = {}
    for i in ids:
        tokens = ", ".join(sample(("EXIT", "OPEN", "24", "Main St", "SALE"), i, 2))
        caption = choose(CAPTIONS, i).capitalize() + "."
        keyed[f"textcaps/{i}"] = instruct(
            i, f"{prefix}{i}.jpg", [TEXTCAPS_PROMPT + tokens, caption]
        )
    return keyed


def vg_records() -> dict[str, dict]:
    """Region-description records on the first three images of each VG folder; integer ids."""
    keyed = {}
    for folder, ids in VG_IDS.items():
        for n in ids[:3]:
            pairs = [(VG_PROMPT + box(f"vg/{n}/{r}"), r) for r in sample(REGIONS, str(n), 2)]
            keyed[f"vg/{n}"] = instruct(n, f"vg/{folder}/{n}.jpg", flat(pairs))
    return keyed


def llava_mix665k_records(llava: dict[str, dict]) -> dict[str, dict]:
    """LLaVA-1.5's mixture: LLaVA-Instruct, VQA, OCR, captioning, regions, ShareGPT text."""
    coco = "coco/train2017/"
    keyed = with_prefix(llava, coco)
    keyed |= short_answer_records("vqav2", COCO_IDS[:4], coco, VQA_QA, 3)
    keyed |= short_answer_records("okvqa", COCO_IDS[4:6], coco, VQA_QA, 1)
    keyed |= aokvqa_records(COCO_IDS[5:7], coco)
    keyed |= refcoco_records(COCO_IDS[6:8], coco)
    keyed |= short_answer_records("gqa", GQA_IDS, "gqa/images/", GQA_QA, 2)
    keyed |= short_answer_records("ocr_vqa", OCR_VQA_IDS, "ocr_vqa/images/", OCR_VQA_QA, 3)
    keyed |= textcaps_records(TEXTVQA_IDS, "textvqa/train_images/")
    keyed |= vg_records()
    keyed |= {f"sharegpt/{i}": record(i, None, values) for i, values in SHAREGPT_CHATS.items()}
    return keyed


def detailed_caption(key: str, subject: str) -> list[str]:
    """A ShareGPT4V-style detailed caption conversation about `subject`."""
    prompts = (
        "What do you see happening in this image?",
        "Analyze the image in a comprehensive and detailed manner.",
        "Describe this image in detail.",
    )
    return [
        choose(prompts, key),
        f"The image shows {subject}. The composition is balanced and the lighting is soft. "
        f"In the background, {choose(CAPTIONS, key)} adds context to the scene.",
    ]


def sharegpt4v_records(mix665k: dict[str, dict]) -> dict[str, dict]:
    """LLaVA's mixture with detail captions replaced and GPT-4V captions added."""
    keyed = {}
    for key, rec in mix665k.items():
        if key.startswith("llava/detail/"):
            rec = instruct(rec["id"], rec["image"], detailed_caption(key, choose(CAPTIONS, key)))
        keyed[key] = rec
    images = [("coco-ap", i, f"coco/train2017/{i}.jpg") for i in (COCO_IDS[0], COCO_IDS[4])]
    images += [("lcs", i, f"llava/llava_pretrain/images/{i[:5]}/{i}.jpg") for i in PRETRAIN_IDS[:3]]
    images += [("sam", i, f"sam/images/{i}.jpg") for i in SAM_IDS]
    images += [
        (folder, stem, f"{folder}/images/{stem}.jpg")
        for folder, stems in WEBDATA.items()
        for stem in stems
    ]
    for source, id_, image in images:
        key = f"{source}/{id_}"
        subject = id_.replace("_", " ") if source.startswith("web") else choose(CAPTIONS, key)
        keyed[key] = instruct(id_, image, detailed_caption(key, subject))
    return keyed


def sharegpt4v_pt_records() -> dict[str, dict]:
    """ShareGPT4V-PT (share-captioner_coco_lcs_sam_1246k_1107.json): Share-Captioner's
    detailed captions of COCO, LCS (the 558K pretraining images) and SA-1B images; the
    caption prompt comes before <image>, as in ShareGPT4V's SFT captions."""
    images = [("coco", i, f"coco/train2017/{i}.jpg") for i in COCO_IDS]
    images += [("lcs", i, f"llava/llava_pretrain/images/{i[:5]}/{i}.jpg") for i in PRETRAIN_IDS]
    images += [("sam", i, f"sam/images/{i}.jpg") for i in SAM_IDS + SA1B_ONLY]
    keyed = {}
    for source, id_, image in images:
        key = f"pt/{source}/{id_}"
        keyed[key] = instruct(id_, image, detailed_caption(key, choose(CAPTIONS, key)))
    return keyed


def sharegpt4v_cap100k_records() -> dict[str, dict]:
    """sharegpt4v_instruct_gpt4-vision_cap100k.json: GPT-4V's own captions, over the same
    image folders as the SFT mixture's captions (COCO, LCS, SAM and the web data)."""
    images = [("coco", i, f"coco/train2017/{i}.jpg") for i in COCO_IDS[1:4]]
    images += [
        ("lcs", i, f"llava/llava_pretrain/images/{i[:5]}/{i}.jpg") for i in PRETRAIN_IDS[3:5]
    ]
    images += [("sam", i, f"sam/images/{i}.jpg") for i in SAM_IDS[:2]]
    images += [
        (folder, stems[0], f"{folder}/images/{stems[0]}.jpg") for folder, stems in WEBDATA.items()
    ]
    keyed = {}
    for source, id_, image in images:
        key = f"cap100k/{source}/{id_}"
        subject = id_.replace("_", " ") if source.startswith("web") else choose(CAPTIONS, key)
        keyed[key] = instruct(id_, image, detailed_caption(key, subject))
    return keyed


def allava_records() -> dict[str, dict]:
    keyed = {}
    for n, name in VFLAN_IMAGES.items():
        task = name.split("+")[0].replace("_", " ")
        values = [
            f"Look at the picture from the {task} task and answer: what does it show?",
            f"The picture shows {choose(CAPTIONS, name)}. Reasoning step by step, the main "
            "subject is in the centre and the answer follows from its appearance.",
        ]
        keyed[f"allava/{n}"] = instruct(
            f"allava_vflan_inst_{n}", f"allava_vflan/images/images_191task_1k/{name}", values
        )
    return keyed


def allava_later_records(allava: dict[str, dict], changed) -> dict[str, dict]:
    """A later ALLaVA revision: ALLAVA_RENAMED renumbered, ALLAVA_DROPPED gone, `changed`
    (record numbers) answered anew."""
    keyed = {}
    for key, rec in allava.items():
        n = int(key.split("/")[1])
        if n in ALLAVA_DROPPED:
            continue
        rec = copy.deepcopy(rec)
        rec["id"] = ALLAVA_RENAMED.get(n, rec["id"])
        if n in changed:
            rec["conversations"][-1]["value"] += ALLAVA_REWRITTEN
        keyed[key] = rec
    return keyed


def vqa_collection_records() -> dict[str, dict]:
    """Five records per vqa_collection component; geoqa+ ids are integers."""
    keyed = {}
    for component, (folder, names) in VQA_COLLECTION.items():
        for n in range(5):
            number = int.from_bytes(digest(f"{component}/{n}")[:2], "big") % 1000
            id_ = number if component == "geoqa+" else f"{component.replace('-', '_')}_{number}"
            question, answer = VQA_COLLECTION_QA[component]
            image = folder + names[n % len(names)]
            keyed[f"{component}/{n}"] = instruct(id_, image, [question, answer])
    return keyed


def mix1m_records(sharegpt4v: dict[str, dict], allava: dict[str, dict]) -> dict[str, dict]:
    """ShareGPT4V + ALLaVA + vqa_collection, less MIX1M_DROPPED, MIX1M_CHANGED re-answered."""
    keyed = {f"sharegpt4v/{key}": rec for key, rec in sharegpt4v.items()}
    keyed |= allava
    keyed |= vqa_collection_records()
    for key in MIX1M_DROPPED:
        del keyed[key]
    for key in MIX1M_CHANGED:
        keyed[key] = with_note(keyed[key])
    return keyed


# ---- files -------------------------------------------------------------------------------
def pretty_json(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def compact_json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def annotation_files() -> dict[str, bytes]:
    """Per annotation source: the file's bytes."""
    subsets = llava_instruct_subsets()
    llava = {key: rec for subset in subsets.values() for key, rec in subset.items()}
    llava_80k = {key: llava[key] for key in sorted(llava)[::2]}
    mix665k = llava_mix665k_records(llava)
    sharegpt4v = sharegpt4v_records(mix665k)
    allava = allava_records()
    keyed = subsets | {
        "llava_instruct_150k": llava,
        "llava_instruct_80k": llava_80k,
        "llava_v1_5_mix665k": mix665k,
        "sharegpt4v_mix665k": sharegpt4v,
        "allava_vflan_json": allava,
        "sharegpt4v_pt_1246k": sharegpt4v_pt_records(),
        "sharegpt4v_cap100k": sharegpt4v_cap100k_records(),
    }
    files = {name: pretty_json(in_hash_order(records)) for name, records in keyed.items()}
    files |= {name: pretty_json(records) for name, records in pretrain_records().items()}
    files["mix1m_json"] = compact_json(in_hash_order(mix1m_records(sharegpt4v, allava)))
    return files


def layout_paths(layout: dict, contents: dict[str, dict[str, bytes]]) -> dict[str, tuple]:
    """Layout path under data/ -> (archive source, member name), for every member the
    registry's trees take from the archives in `contents` (as extraction chooses them)."""
    taken, _ = tree_members(layout, {s: zip_bytes(c) for s, c in contents.items()})
    specs = tree_specs(layout)
    return {
        f"{specs[tree].dest}/{member.target}": (archive, member_name(member.info))
        for tree, per_archive in taken.items()
        for archive, members in per_archive.items()
        for member in members
    }


@dataclass
class Pool:
    """Every archive's members (with COPIES made), where each lands, and the evaluation
    sets' files (miniature.evalsets) with their images."""

    contents: dict[str, dict[str, bytes]]
    where: dict[str, tuple[str, str]]
    evals: dict[str, dict[str, bytes]]
    # `<set>#<row>` -> (the image it shows: a training image's layout path, or the set's
    # own `<set>/own:<label>`; its bytes)
    eval_images: dict[str, tuple[str, bytes]]

    def image(self, path: str) -> bytes:
        archive, member = self.where[path]
        return self.contents[archive][member]


def build_pool(layout: dict) -> Pool:
    contents = {
        source: {name: member_bytes(name, kind) for name, kind in members.items()}
        for source, members in archive_members().items()
    }
    pool = Pool(contents, layout_paths(layout, contents), {}, {})
    for path, (original, how) in COPIES.items():
        archive, member = pool.where[path]
        contents[archive][member] = copied(pool.image(original), how)
    counter: dict[str, int] = {}

    def image_of(name: str, key: str, how: str) -> bytes:
        data = image_bytes(key, "JPEG") if how == evalsets.OWN else copied(pool.image(key), how)
        number = counter[name] = counter.get(name, -1) + 1
        pool.eval_images[f"{name}#{number}"] = (key, data)
        return data

    pool.evals = evalsets.build(image_of)
    return pool


def eval_source_files(pool: Pool) -> dict:
    """Per evaluation source (EVAL_SOURCES): one file's bytes, or its files' by name."""
    out = {}
    for name, files in pool.evals.items():
        named = {path.rsplit("/", 1)[1]: data for path, data in files.items()}
        out[EVAL_SOURCES[name]] = next(iter(named.values())) if len(named) == 1 else named
    return out


def base_of(key: str, pool: Pool) -> str:
    """The picture an image shows: what it copies, followed to the original."""
    if key in pool.eval_images:
        key = pool.eval_images[key][0]
    while key in COPIES:
        key = COPIES[key][0]
    return key


def picture_problems(pool: Pool) -> list[str]:
    """Where the miniature's images break its design: a declared copy that is not what it
    says, or two images of different pictures within FAR_BEYOND bits of pHash."""
    facts = {path: hash_image(pool.image(path)) for path in pool.where}
    facts |= {key: hash_image(data) for key, (_, data) in pool.eval_images.items()}
    problems = []
    for path, (original, how) in COPIES.items():
        a, b = facts[path], facts[original]
        ok = {
            "exact": a.sha256 == b.sha256,
            "pixels": a.pixels == b.pixels and a.sha256 != b.sha256,
        }.get(how, a.decodes and b.decodes and bin(a.phash ^ b.phash).count("1") <= NEAR_WITHIN)
        if not ok:
            problems.append(f"{path} is not a {how} copy of {original}")
    keys = sorted(k for k, f in facts.items() if f.decodes)
    bases = {k: base_of(k, pool) for k in keys}
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            distance = bin(facts[a].phash ^ facts[b].phash).count("1")
            if bases[a] != bases[b] and distance <= FAR_BEYOND:
                problems.append(f"{a} and {b} are {distance} bits apart, other pictures")
    return problems


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A plain tar of `members` in name order, fixed metadata, ending after its two zero
    blocks (without the padding to a 10 KiB record, which readers do not need)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), TAR_MTIME, 0o644
            archive.addfile(info, io.BytesIO(members[name]))
        end = archive.offset + 2 * tarfile.BLOCKSIZE
    return buffer.getvalue()[:end]


def sa1b_parts() -> dict[str, bytes]:
    """SA-1B's miniature tars by part name; an image the 9K zip also holds has its bytes."""
    out = {}
    for part, ids in SA1B_PARTS.items():
        members = {}
        for i in ids:
            source = f"{SAM_FOLDER}{i}.jpg" if i in SAM_IDS else f"{i}.jpg"
            members[f"{i}.jpg"] = member_bytes(source, "JPEG")
            masks = {"image": {"image_id": int(i[3:]), "file_name": f"{i}.jpg"}, "annotations": []}
            members[f"{i}.json"] = compact_json(masks)
        out[part] = tar_bytes(members)
    return out


def parted_files() -> dict[str, dict[str, bytes]]:
    """Per source of parts: its files' bytes by name."""
    return {"sa1b": sa1b_parts()}


def build_files(layout: dict, pool: Pool | None = None) -> dict:
    """Per source name of sources.yaml: the bytes of its miniature file (a source of
    parts: its files' bytes by name); `layout` is the registry's."""
    pool = pool or build_pool(layout)
    archives = {source: zip_bytes(members) for source, members in pool.contents.items()}
    return annotation_files() | archives | parted_files() | eval_source_files(pool)


def revision_files(first: bytes) -> dict[str, bytes]:
    """Files beside the miniature that the default build does not use, by path under
    miniature/upstream/: a later Hub revision of ALLaVA-Instruct-VFLAN-4V, and an index
    (hf-revisions.json) giving every version's size, sha256, records and differences from
    the first, whose bytes (`first`) are the default build's file."""
    allava = allava_records()
    folder = f"{REVISIONS_PREFIX}{ALLAVA_REPO}/"
    versions = [
        {
            **ALLAVA_FIRST,
            "file": f"{MINI_PREFIX}hf/{ALLAVA_REPO}/{ALLAVA_PATH}",
            "size": len(first),
            "sha256": sha256(first),
            "records": len(allava),
            "renamed": {},
            "dropped": [],
            "changed": [],
        }
    ]
    files = {}
    for revision, later in ALLAVA_LATER.items():
        data = pretty_json(in_hash_order(allava_later_records(allava, later["changed"])))
        files[f"{folder}{revision}/{ALLAVA_PATH}"] = data
        versions.append(
            {
                "revision": revision,
                "short": revision[:7],
                "date": later["date"],
                "file": f"{MINI_PREFIX}{folder}{revision}/{ALLAVA_PATH}",
                "size": len(data),
                "sha256": sha256(data),
                "records": len(allava) - len(ALLAVA_DROPPED),
                "renamed": {
                    allava[f"allava/{n}"]["id"]: new for n, new in sorted(ALLAVA_RENAMED.items())
                },
                "dropped": [allava[f"allava/{n}"]["id"] for n in ALLAVA_DROPPED],
                "changed": [allava[f"allava/{n}"]["id"] for n in later["changed"]],
            }
        )
    files[REVISIONS_INDEX] = pretty_json({ALLAVA_REPO: {"path": ALLAVA_PATH, "versions": versions}})
    return files


def archive_infos(label: str, name: str, data: bytes) -> list:
    """The entries of one miniature archive file (zip, or a plain tar by its name)."""
    if not name.endswith(".tar"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.infolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return tar_entries(label, path, "regenerate the miniature")


def tree_members(layout: dict, files: dict) -> tuple[dict, list[str]]:
    """Per layout tree (`layout.trees` and `layout.pools`) and input archive, the files
    extraction takes from its miniature archive (chosen as stages/extract.py chooses
    them); and the trees for which it would find none. `files[source]` is a file's
    bytes, or for a source of parts its files' bytes by name."""
    taken, problems = {}, []
    try:
        specs = tree_specs(layout)
    except StageError as err:
        return {}, [str(err)]
    for tree, spec in specs.items():
        try:
            taken[tree] = {}
            for inp in spec.inputs:
                if inp.archive not in files:
                    raise StageError(f"no miniature archive {inp.archive!r}")
                data = files[inp.archive]
                one = TreeSpec(
                    tree, inp.archive, inp.candidates, spec.dest, spec.rename_ext, spec.decode_names
                )
                found = []
                for name, blob in sorted(data.items() if isinstance(data, dict) else [("", data)]):
                    infos = archive_infos(f"tree {tree}", name, blob)
                    prefix = choose_prefix(f"tree {tree}", one, infos)
                    found += select_members(f"tree {tree}", one, infos, prefix, inp.only_ext)
                taken[tree][inp.archive] = found
        except StageError as err:
            problems.append(f"{tree}: {err}")
    return taken, problems


def content_counts(files: dict, layout: dict) -> dict[str, dict]:
    """Per source: `records` of a JSON array file, `files` per layout tree of an archive."""
    counts: dict[str, dict] = {}
    for name, data in files.items():
        if isinstance(data, bytes) and data.lstrip()[:1] == b"[":
            counts[name] = {"records": len(json.loads(data))}
    taken, _ = tree_members(layout, files)
    for tree in sorted(taken):
        for archive, found in taken[tree].items():
            counts.setdefault(archive, {}).setdefault("files", {})[tree] = len(found)
    return counts


def folder_bytes(parts: dict[str, bytes]) -> bytes:
    """What pins a source of parts: its `sha256sum` listing (see llava_data.parts)."""
    return listing_text((sha256(parts[n]), n) for n in sorted(parts)).encode("utf-8")


def mini_line(indent: str, path: str, data, counts: dict, keep: str = "") -> str:
    """The one-line `mini:` origin of a miniature file: where, size, sha256, what it holds
    (a source of parts: their total size and the sha256 of their listing; `keep`: its
    `parts` and `use`, as the line had them)."""
    if isinstance(data, dict):
        size, digest = sum(map(len, data.values())), sha256(folder_bytes(data))
    else:
        size, digest = len(data), sha256(data)
    parts = [f"local: {path}", *([keep] if keep else []), f"size: {size}", f"sha256: {digest}"]
    if "records" in counts:
        parts.append(f"records: {counts['records']}")
    if "files" in counts:
        held = ", ".join(f"{tree}: {n}" for tree, n in counts["files"].items())
        parts.append(f"files: {{{held}}}")
    return f"{indent}mini: {{{', '.join(parts)}}}\n"


def update_registry(text: str, files: dict[str, bytes], counts: dict[str, dict]) -> str:
    """`text` with each `mini:` line naming a file's `local:` path rewritten to hold that
    file's size, sha256 and content counts (`files` and `counts` keyed by the path)."""
    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        match = re.match(r"^(\s+)mini: \{local: ([^,}\s]+)[,}]", line)
        if match and match.group(2) in files:
            path = match.group(2)
            keep = re.search(r"parts: (?:\[[^]]*\]|glob)(?:, use: (?:true|false))?", line)
            held = counts.get(path, {})
            lines[n] = mini_line(match.group(1), path, files[path], held, keep and keep.group(0))
    return "".join(lines)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="miniature/upstream", type=Path, help="output folder")
    parser.add_argument(
        "--registry", default="sources.yaml", type=Path, help="the registry to read"
    )
    parser.add_argument(
        "--update-registry",
        metavar="SOURCES_YAML",
        type=Path,
        help="read this registry and fill in the size and sha256 of its mini: lines",
    )
    args = parser.parse_args(argv)

    registry = args.update_registry or args.registry
    config = yaml.safe_load(registry.read_text(encoding="utf-8"))
    locals_ = {name: source["mini"]["local"] for name, source in config["sources"].items()}
    layout = config["layout"]
    pool = build_pool(layout)
    files = build_files(layout, pool)
    problems = picture_problems(pool)
    problems += [f"{name}: no generator" for name in sorted(set(locals_) - set(files))]
    problems += [f"{name}: not in {registry}" for name in sorted(set(files) - set(locals_))]
    problems += [
        f"{name}: {path} is not under {MINI_PREFIX}"
        for name, path in locals_.items()
        if not path.startswith(MINI_PREFIX)
    ]
    problems += tree_members(layout, files)[1]
    if problems:
        sys.exit("miniature: " + "; ".join(problems))

    extra = revision_files(files["allava_vflan_json"])
    for name, path in sorted(locals_.items()):
        if isinstance(files[name], dict):
            for part, data in sorted(files[name].items()):
                write_atomic(args.out / path.removeprefix(MINI_PREFIX) / part, data)
        else:
            write_atomic(args.out / path.removeprefix(MINI_PREFIX), files[name])
    for path, data in sorted(extra.items()):
        write_atomic(args.out / path, data)
    if args.update_registry:
        text = registry.read_text(encoding="utf-8")
        counts = content_counts(files, layout)
        updated = update_registry(
            text,
            {locals_[name]: data for name, data in files.items()},
            {locals_[name]: held for name, held in counts.items()},
        )
        if updated != text:
            write_atomic(registry, updated.encode("utf-8"))
    blobs = [b for d in files.values() for b in (d.values() if isinstance(d, dict) else [d])]
    total = sum(map(len, blobs))
    print(
        f"miniature: {len(blobs)} files, {total} bytes in {args.out}; "
        f"{len(extra)} beside them ({args.out / REVISIONS_INDEX})",
        file=sys.stderr,
    )
    for version in json.loads(extra[REVISIONS_INDEX])[ALLAVA_REPO]["versions"]:
        print(
            f"miniature: {ALLAVA_REPO} {ALLAVA_PATH} at {version['short']} ({version['date']}): "
            f"{version['size']} bytes, sha256 {version['sha256']}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
