"""The full profile rehearsed: the committed registry, every entry as it is, on loopback.

The stand-ins (a Hugging Face Hub, an HTTP server, a Google Drive) serve the miniature's
bytes under the real repository names, paths, revisions, URLs and Drive ids of every
`full` origin; they are reached as a lab behind a mirror would reach them (HF_ENDPOINT,
and a mirrors.local.yaml rewriting the real URL prefixes). Only the sizes and checksums
of the test's copy of sources.yaml are swapped for the miniature's, and the manual
sources are given as local copies. `dvc repro` with `profile: full` must then build the
whole layout and the mixture, byte for byte those of the miniature, through the real
transports: every full entry routes, resolves and extracts. The same stand-ins then play
a gone file, a changed file, a gated repository and a Drive quota for check_upstream.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from llava_data import parts
from llava_data.origins import Origin
from tests.dvcrepo import clone, dvc, run, tree_digest
from tests.servers import DriveServer, FileServer, HubServer
from tests.zips import tar_of

LATER_ALLAVA = "miniature/upstream/hf-revisions"
MIX_METRICS = "metrics/recipes/mix1m.json"
CHECK = [
    "python",
    "-m",
    "llava_data.check_upstream",
    "--registry",
    "sources.yaml",
    "--profile",
    "full",
    "--local-copies",
    "sources.local.yaml",
    "--mirrors",
    "mirrors.local.yaml",
]


def swap_pins(text: str, name: str, size: int, sha256: str) -> str:
    """`text` with the `full` line of source `name` held to the miniature's bytes instead."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == f"  {name}:")
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("    full: {"):
            line = re.sub(r"\bmd5: [0-9a-f]{32}, ?", "", lines[i])
            line = re.sub(r"\bsha256_prefix: [0-9a-f]+, ?", "", line)
            line = re.sub(r"\bsize: (?:\d+|null)", f"size: {size}", line)
            line = re.sub(r"\bsha256: (?:[0-9a-f]{64}|null)", f"sha256: {sha256}", line)
            if "sha256:" not in line:
                line = line.replace(f"size: {size}", f"size: {size}, sha256: {sha256}")
            lines[i] = line
            return "".join(lines)
    raise AssertionError(f"no full line for {name}")


def later_versions(root: Path) -> dict[str, bytes]:
    """repo/path -> bytes of the later upstream versions the miniature carries."""
    base = root / LATER_ALLAVA
    out = {}
    for path in sorted(base.rglob("*")) if base.is_dir() else []:
        if path.is_file():
            owner, repo, _commit, *rel = path.relative_to(base).parts
            out[f"{owner}/{repo}:{'/'.join(rel)}"] = path.read_bytes()
    return out


class Upstream:
    """The loopback stand-ins, filled from the registry's full origins and the miniature."""

    def __init__(self, repo: Path, work: Path):
        self.hub, self.http, self.drive = HubServer(), FileServer(work / "http"), DriveServer()
        self.repo, self.work, self.mirrors, self.local = repo, work, {}, {}
        self.http_files: dict[str, Path] = {}

    def start(self) -> Upstream:
        for server in (self.hub, self.http, self.drive):
            server.start()
        return self

    def stop(self) -> None:
        for server in (self.hub, self.http, self.drive):
            server.stop()

    def fill(self, registry: dict) -> dict[str, str]:
        """Serve every full origin; return the registry text with the miniature's pins."""
        text = (self.repo / "sources.yaml").read_text(encoding="utf-8")
        hub_files: dict[str, dict[str, bytes]] = {}
        hub_revisions: dict[str, set[str | None]] = {}
        for name, entry in registry["sources"].items():
            full = entry["full"]
            if "parts" in full and "hf" in full:  # an evaluation set's shards on the Hub
                folder = self.repo / entry["mini"]["local"]
                origin = Origin.parse(name, entry, "full")
                names = origin.listed(sorted(p.name for p in folder.iterdir())).parts
                repo_id, path = full["hf"]["repo"], full["hf"]["path"]
                under = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
                for part in names:
                    hub_files.setdefault(repo_id, {})[under + part] = (folder / part).read_bytes()
                hub_revisions.setdefault(repo_id, set()).add(full["hf"].get("revision"))
                text = swap_pins(text, name, entry["mini"]["size"], entry["mini"]["sha256"])
                continue
            if "parts" in full:  # SA-1B's tars: a lab that opted in and has them in a folder
                folder, size, sha256 = self.parts_folder(name, entry)
                text = swap_pins(text, name, size, sha256).replace(
                    f"parts: {full['parts']}, use: false".replace("'", ""),
                    f"parts: {full['parts']}, use: true".replace("'", ""),
                )
                self.local[name] = str(folder)
                continue
            data = (self.repo / entry["mini"]["local"]).read_bytes()
            text = swap_pins(text, name, len(data), entry["mini"]["sha256"])
            if "hf" in full:
                repo_id, path = full["hf"]["repo"], full["hf"]["path"]
                hub_files.setdefault(repo_id, {})[path] = data
                hub_revisions.setdefault(repo_id, set()).add(full["hf"].get("revision"))
            elif "url" in full:
                url = urlparse(full["url"])
                target = Path(self.http.root) / url.netloc / url.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                self.http_files[name] = target
                self.mirrors[f"{url.scheme}://{url.netloc}/"] = f"{self.http.url}/{url.netloc}/"
            elif "gdrive" in full:
                self.drive.add(full["gdrive"]["id"], entry["file"], data, mode="confirm")
            elif "manual" in full:
                self.local[name] = str(self.repo / entry["mini"]["local"])
        self.mirrors["https://drive.google.com/"] = f"{self.drive.url}/"
        self.mirrors["https://www.googleapis.com/"] = f"{self.drive.url}/"
        later = later_versions(self.repo)
        for repo_id, files in sorted(hub_files.items()):
            # every file at every revision the registry names; null revisions on the branch
            for revision in sorted(r for r in hub_revisions[repo_id] if r):
                self.hub.publish(repo_id, files, commit=revision)
            self.hub.publish(repo_id, files)  # the commit an unpinned revision finds by content
            newer = {k.split(":", 1)[1]: v for k, v in later.items() if k.startswith(repo_id + ":")}
            if newer:  # the later version upstream now serves by default
                self.hub.publish(repo_id, newer, title="a later version")
        return text

    def parts_folder(self, name: str, entry: dict) -> tuple[Path, int, str]:
        """A folder of every part the full entry names: the miniature's parts, and for the
        others a tar of masks only (no image, so the layout stays the miniature's); with
        the parts' total size and the sha256 of their sha256sum listing."""
        folder = self.work / name
        folder.mkdir()
        mini = self.repo / entry["mini"]["local"]
        names = Origin.parse(name, entry, "full").parts
        for part in names:
            if (mini / part).is_file():
                shutil.copyfile(mini / part, folder / part)
            else:
                masks = part.replace(".tar", ".json")
                (folder / part).write_bytes(tar_of({masks: b'{"annotations": []}'}))
        listing = parts.listing(folder, names)
        total = sum((folder / p).stat().st_size for p in names)
        return folder, total, parts.listing_digest(listing)

    def write_settings(self) -> None:
        (self.repo / "mirrors.local.yaml").write_text(yaml.safe_dump(self.mirrors))
        (self.repo / "sources.local.yaml").write_text(yaml.safe_dump(self.local))

    @property
    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, first_build):
    work = tmp_path_factory.mktemp("rehearsal")
    repo = clone(work / "repo")
    registry = yaml.safe_load((repo / "sources.yaml").read_text(encoding="utf-8"))
    upstream = Upstream(repo, work).start()
    try:
        (repo / "sources.yaml").write_text(upstream.fill(registry), encoding="utf-8")
        upstream.write_settings()
        params = repo / "params.yaml"
        params.write_text(params.read_text().replace("profile: mini", "profile: full", 1))
        for served in ("http", "hf"):  # only the stand-ins have these files now
            shutil.rmtree(repo / "miniature/upstream" / served)
        build = dvc("repro", cwd=repo, extra_env=upstream.env)
        yield repo, upstream, build, registry, first_build
    finally:
        upstream.stop()


def test_the_full_registry_builds_the_layout_and_mixture_through_the_real_transports(rehearsal):
    repo, upstream, build, registry, mini = rehearsal
    # the same files, except what names how many SA-1B tars fed sam/images: 51 here, the
    # miniature's 3 there (the others hold masks only)
    pool = {"data": "sam/images/.extracted.json", "manifests": "sam_images.tsv"}
    for folder in ("data", "manifests", "reports"):
        ours, theirs = tree_digest(repo / folder), tree_digest(mini / folder)
        assert ours.keys() == theirs.keys(), folder
        differ = {k for k in ours if ours[k] != theirs[k]}
        assert differ == ({pool[folder]} if folder in pool else set()), folder
    stamp = json.loads((repo / "data" / pool["data"]).read_text())
    assert [i["files"] for i in stamp["inputs"]] == [1, 51]
    manifest = (repo / "manifests/sam_images.tsv").read_text().splitlines()
    assert manifest[1:] == (mini / "manifests/sam_images.tsv").read_text().splitlines()[1:]
    assert (repo / MIX_METRICS).read_bytes() == (mini / MIX_METRICS).read_bytes()
    for name, entry in registry["sources"].items():
        assert f"Running stage 'fetch@{name}'" in build.stdout
        fetched = parts.SUMS if "parts" in entry["full"] else entry["file"]
        assert (repo / "downloads" / name / fetched).is_file()
    # SA-1B's 51 tars, as the full entry names them, were fetched, verified and extracted
    sa1b = registry["sources"]["sa1b"]["full"]["parts"]
    listed = (repo / "downloads/sa1b" / parts.SUMS).read_text().splitlines()
    assert len(listed) == sa1b[1] - sa1b[0] + 1 == 51
    assert listed[-1].endswith("  sa_000050.tar")
    # every request reached a stand-in: the Hub, the mirrored HTTP hosts, Drive
    assert upstream.hub.seen and upstream.http.seen and upstream.drive.seen


def test_a_revision_known_only_by_content_is_found_and_pinned(rehearsal):
    repo, _, build, registry, _ = rehearsal
    pinned = yaml.safe_load((repo / "sources.yaml").read_text(encoding="utf-8"))
    for name, entry in registry["sources"].items():
        hf = entry["full"].get("hf")
        if hf and hf.get("revision") is None and entry["full"].get("sha256"):
            revision = pinned["sources"][name]["full"]["hf"]["revision"]
            assert re.fullmatch(r"[0-9a-f]{40}", revision), name


def test_check_upstream_says_ok_for_every_source_of_the_rehearsal(rehearsal):
    repo, upstream, *_ = rehearsal
    proc = run(CHECK, repo, check=False, extra_env=upstream.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert rows and all(" ok " in f"{row} " for row in rows), proc.stdout


def test_check_upstream_names_a_gone_a_changed_a_gated_and_a_quota_refused_source(rehearsal):
    repo, upstream, _, registry, _ = rehearsal
    sources = registry["sources"]
    by_kind = {}
    for name, entry in sources.items():
        for kind in ("hf", "url", "gdrive"):
            if kind in entry["full"]:
                by_kind.setdefault(kind, []).append(name)
    gone, changed = by_kind["url"][0], by_kind["url"][1]
    upstream.http_files[gone].unlink()
    upstream.http_files[changed].write_bytes(b"another file of another size")
    gated = by_kind["hf"][0]
    upstream.hub.gate(sources[gated]["full"]["hf"]["repo"], "a-token-nobody-has")
    quota = by_kind["gdrive"][0]
    name, data, _ = upstream.drive.files[sources[quota]["full"]["gdrive"]["id"]]
    upstream.drive.files[sources[quota]["full"]["gdrive"]["id"]] = (name, data, "quota")
    proc = run(CHECK, repo, check=False, extra_env=upstream.env)
    assert proc.returncode == 1
    status = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert " gone " in status[gone] and " changed " in status[changed]
    assert " gated " in status[gated] and " needs a manual step " in status[quota]
