"""Stand-ins of the evaluation sets lmms-lab publishes on the Hub (Parquet, images embedded).

Each set's files have the real repository's paths and names (shards, hash suffixes) and
its columns, as `datasets` types them (the `image` column a datasets `Image`: a struct of
bytes and path). Their images are stand-in photographs, except the ones a set shares with
the training pool in the real world, which are copies of the miniature's own training
images (EVAL_COPIES): POPE's COCO val2014 images sit in coco/train2017, RefCOCO's are COCO
train2014 images (one re-encoded by the publisher), TextVQA's val images ship in the
train_val_images zip, GQA's testdev images in GQA's images.zip, VQAv2's val images are COCO
val2014 images. MME, MMBench and ScienceQA-IMG share nothing with it.
"""

from __future__ import annotations

import io

# set -> (repository, the files of its split or config, rows per file); a row is the
# layout path of a training image it copies, `own:<label>` (a picture of the set's own;
# rows with the same label show the same image, as POPE's 9,000 rows show 500 images) or
# None (a row without an image, as ScienceQA has).
OWN = "own"
EVAL_SETS = {
    "pope": (
        "lmms-lab/POPE",
        {
            "data/test-00000-of-00003.parquet": ("coco/train2017/000000000025.jpg", "own:a"),
            "data/test-00001-of-00003.parquet": ("own:a", "own:b"),
            "data/test-00002-of-00003.parquet": ("coco/train2017/000000000025.jpg", "own:b"),
        },
    ),
    "mme": (
        "lmms-lab/MME",
        {
            "data/test-00000-of-00004-a25dbe3b44c4fda6.parquet": ("own:1",),
            "data/test-00001-of-00004-7d22c7f1aba6fca4.parquet": ("own:2",),
            "data/test-00002-of-00004-594798fd3f5b029c.parquet": ("own:3", "own:4"),
            "data/test-00003-of-00004-53ae1794f93b1e35.parquet": ("own:5",),
        },
    ),
    "mmbench_en_dev": ("lmms-lab/MMBench", {"en/dev-00000-of-00001.parquet": ("own:6", "own:7")}),
    "scienceqa_img": (
        "lmms-lab/ScienceQA",
        {"ScienceQA-IMG/test-00000-of-00001.parquet": ("own:8", None, "own:9")},
    ),
    "textvqa_val": (
        "lmms-lab/textvqa",
        {
            "data/validation-00000-of-00003.parquet": (
                "textvqa/train_images/0054c91397f2fe05.jpg",
            ),
            "data/validation-00001-of-00003.parquet": ("own:10",),
            "data/validation-00002-of-00003.parquet": ("own:11",),
        },
    ),
    "gqa_testdev": (
        "lmms-lab/GQA",
        {
            "testdev_balanced_images/testdev-00000-of-00001.parquet": (
                "gqa/images/2410134.jpg",
                "own:12",
            )
        },
    ),
    "refcoco_val": (
        "lmms-lab/RefCOCO",
        {
            "data/val-00000-of-00004.parquet": ("coco/train2017/000000000036.jpg",),
            "data/val-00001-of-00004.parquet": ("own:13",),
            "data/val-00002-of-00004.parquet": ("own:14",),
            "data/val-00003-of-00004.parquet": ("own:15",),
        },
    ),
    "refcoco_testa": (
        "lmms-lab/RefCOCO",
        {"data/testA-00000-of-00001.parquet": ("coco/train2017/000000000009.jpg", "own:16")},
    ),
    "refcoco_testb": (
        "lmms-lab/RefCOCO",
        {"data/testB-00000-of-00001.parquet": ("own:17", "own:18")},
    ),
    "vqav2_val": (
        "lmms-lab/VQAv2",
        {
            "data/validation-00000-of-00002.parquet": ("coco/train2017/000000000042.jpg",),
            "data/validation-00001-of-00002.parquet": ("own:19",),
        },
    ),
}
# How a set's copy of a training image differs from it (`exact` unless named here): the
# publisher re-encoded it.
EVAL_COPIES = {("refcoco_val", "coco/train2017/000000000036.jpg"): "jpeg"}


def features(name: str):
    """The `datasets` features of a set's files (its columns, as the real set has them)."""
    from datasets import Features, Image, Sequence, Value

    image = {"image": Image()}
    if name == "pope":
        return Features(
            {
                "id": Value("string"),
                "question_id": Value("string"),
                "question": Value("string"),
                "answer": Value("string"),
                "image_source": Value("string"),
                **image,
                "category": Value("string"),
            }
        )
    if name == "mme":
        return Features(
            {
                "question_id": Value("string"),
                **image,
                "question": Value("string"),
                "answer": Value("string"),
                "category": Value("string"),
            }
        )
    if name == "mmbench_en_dev":
        text = ("question", "hint", "A", "B", "C", "D", "answer", "category")
        return Features(
            {
                "index": Value("string"),
                **{k: Value("string") for k in text},
                **image,
                **{k: Value("string") for k in ("source", "L2-category", "comment", "split")},
            }
        )
    if name == "scienceqa_img":
        return Features(
            {
                **image,
                "question": Value("string"),
                "choices": Sequence(Value("string")),
                "answer": Value("int8"),
                **{k: Value("string") for k in ("hint", "task", "grade", "subject", "topic")},
                **{k: Value("string") for k in ("category", "skill", "lecture", "solution")},
            }
        )
    if name == "textvqa_val":
        return Features(
            {
                "image_id": Value("string"),
                "question_id": Value("int32"),
                "question": Value("string"),
                **image,
                "answers": Sequence(Value("string")),
                "set_name": Value("string"),
            }
        )
    if name == "gqa_testdev":
        return Features({"id": Value("string"), **image})
    if name.startswith("refcoco"):
        return Features(
            {
                "question_id": Value("string"),
                **image,
                "question": Value("string"),
                "answer": Sequence(Value("string")),
                "bbox": Sequence(Value("float32")),
                "file_name": Value("string"),
            }
        )
    return Features(  # vqav2_val
        {
            "question_id": Value("int64"),
            "question": Value("string"),
            "multiple_choice_answer": Value("string"),
            "image_id": Value("int64"),
            **image,
        }
    )


def row_values(name: str, number: int, image: dict | None) -> dict:
    """A row of set `name` (its `number` in the set) with `image` ({bytes, path} or None)."""
    n = str(number)
    by_set = {
        "pope": {
            "id": n,
            "question_id": str(number + 1),
            "question": "Is there a person in the image?",
            "answer": "yes" if number % 2 else "no",
            "image_source": f"COCO_val2014_{number:012d}",
            "category": ("adversarial", "popular", "random")[number % 3],
        },
        "mme": {
            "question_id": f"code_reasoning/{number:04d}.png",
            "question": "Is the answer to this question 3? Please answer yes or no.",
            "answer": "Yes",
            "category": "code_reasoning",
        },
        "mmbench_en_dev": {
            "index": n,
            "question": "Which of these is shown?",
            "hint": "",
            "A": "a cat",
            "B": "a dog",
            "C": "a bird",
            "D": "a fish",
            "answer": "A",
            "category": "image_topic",
            "source": "miniature",
            "L2-category": "coarse_perception",
            "comment": "",
            "split": "dev",
        },
        "scienceqa_img": {
            "question": "Which of these states is farthest north?",
            "choices": ["Maine", "Texas"],
            "answer": 0,
            "hint": "",
            "task": "closed choice",
            "grade": "grade4",
            "subject": "social science",
            "topic": "geography",
            "category": "Geography",
            "skill": "Read a map: cardinal directions",
            "lecture": "",
            "solution": "",
        },
        "textvqa_val": {
            "image_id": f"{number:016x}",
            "question_id": 34602 + number,
            "question": "what is written on the sign?",
            "answers": ["stop"] * 10,
            "set_name": "val",
        },
        "gqa_testdev": {"id": f"n{161313 + number}"},
        "vqav2_val": {
            "question_id": 262148000 + number,
            "question": "What color is the bus?",
            "multiple_choice_answer": "red",
            "image_id": 262148 + number,
        },
    }
    if name.startswith("refcoco"):
        values = {
            "question_id": n,
            "question": "Please carefully observe the area circled in the image and come up "
            "with a caption for the area.",
            "answer": ["man on the left"],
            "bbox": [10.0, 12.0, 30.0, 40.0],
            "file_name": f"COCO_train2014_{number:012d}.jpg",
        }
    else:
        values = by_set[name]
    return {**values, "image": image}


def parquet_bytes(name: str, rows: list[dict]) -> bytes:
    """One file of set `name`: the rows with fixed writer settings (the same bytes each run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features(name).arrow_schema
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy", write_statistics=False)
    return buffer.getvalue()


def build(image_of) -> dict[str, dict[str, bytes]]:
    """Per set, its files' bytes by path in its repository; `image_of(set, key, how)` gives
    the bytes of a row's image: a copy (key: a training image's layout path, `how`: exact
    or jpeg) or a picture of its own (key: `<set>/own:<label>`, how: OWN)."""
    out: dict[str, dict[str, bytes]] = {}
    for name, (_, files) in EVAL_SETS.items():
        number = 0
        out[name] = {}
        for path, images in files.items():
            rows = []
            for key in images:
                if key is None:
                    image = None
                elif key.startswith(OWN + ":"):
                    image = {"bytes": image_of(name, f"{name}/{key}", OWN), "path": None}
                else:
                    how = EVAL_COPIES.get((name, key), "exact")
                    image = {"bytes": image_of(name, key, how), "path": None}
                rows.append(row_values(name, number, image))
                number += 1
            out[name][path] = parquet_bytes(name, rows)
    return out
