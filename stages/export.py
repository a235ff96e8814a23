"""Export one built recipe in one shard format (`exports.*`), under exports/<recipe>/<format>/.

Reads the recipe's data YAML (`--yaml`: its part files, in order) and the images under
`--data-root`; writes the format's files (see `llava_data.exports`) into a temporary
folder beside `--out` and swaps it in only when every file is complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_data import exports
from llava_data.common import (
    StageError,
    load_params,
    remove_path,
    remove_stale,
    run_main,
    swap_in,
    temporary,
)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--format", required=True, choices=exports.FORMATS)
    ap.add_argument("--params", required=True)
    ap.add_argument("--yaml", required=True, type=Path, help="the recipe's data YAML")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)

    recipes = sorted(load_params(args.params, "recipes"))
    params = exports.ExportParams.parse(load_params(args.params, "exports"), recipes)
    if args.recipe not in params.recipes or args.format not in params.formats:
        raise StageError(f"exports.recipes/formats do not list {args.recipe} / {args.format}")

    remove_stale(args.out)
    tmp = temporary(args.out)
    remove_path(tmp)
    tmp.mkdir(parents=True)
    try:
        skipped: list = []
        records = exports.with_images_present(
            exports.recipe_records(args.yaml), args.data_root, skipped
        )
        if args.format == "webdataset":
            exports.write_webdataset(records, args.data_root, tmp, args.recipe, params.shard_bytes)
        elif args.format == "parquet":
            exports.write_parquet(
                records, args.data_root, tmp, args.recipe, params.shard_bytes, params.row_group_rows
            )
        else:
            exports.write_llamafactory(records, tmp, args.recipe)
        swap_in(tmp, args.out)
        if skipped:
            ids = ", ".join(repr(r.record.get("id")) for r in skipped[:5])
            print(
                f"{args.recipe} ({args.format}): left out {len(skipped)} records whose images "
                f"do not exist (validate.policy keeps them in the recipe), e.g. {ids}",
                file=sys.stderr,
            )
    finally:
        remove_path(tmp)


if __name__ == "__main__":
    sys.exit(run_main(main))
