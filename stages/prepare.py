"""Make one conversation file training-ready: ids as strings, every record checked.

Reads the fetched annotation file (`--source`, a fetch output folder), checks
each record's structure and image (`--images` is the folder under the data root
the file's image paths are relative to), applies `validate.policy`, and writes
`--dest` (one record per line), a report of every record with a problem and a
metrics file of counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_data import jsonscan
from llava_data.common import (
    load_params,
    only_file,
    run_main,
    write_json,
    write_report,
)
from llava_data.validate import (
    ValidationParams,
    count_reasons,
    enforce,
    record_problems,
)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, type=Path, help="fetch output folder")
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--images", required=True, help="image folder the records are relative to")
    ap.add_argument("--params", required=True, help="params file holding validate.*")
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    args = ap.parse_args(argv)

    vparams = ValidationParams.parse(load_params(args.params, "validate"))
    src = only_file(args.source)
    index = jsonscan.scan(src)
    problems = record_problems(
        jsonscan.iter_records(index, range(len(index))), args.images, args.data_root, vparams
    )
    drop = enforce(str(src), problems, index.ids, vparams.policy)
    kept = [n for n in range(len(index)) if n not in drop]
    jsonscan.write_array(index, kept, args.dest)
    write_report(
        args.report,
        [
            (index.ids[n], path, reason, "dropped" if n in drop else "kept")
            for n, (reason, path) in sorted(problems.items())
        ],
        ("id", "image", "reason", "action"),
    )
    write_json(
        args.metrics,
        {
            "records_in": len(index),
            "records_out": len(kept),
            "text_only": sum(1 for image in index.images if image is None),
            "ids_made_strings": int(index.id_was_int.sum()),
            "problems": count_reasons(problems),
            "dropped": len(drop),
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
