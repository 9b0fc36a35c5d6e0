"""Public data sets by name: download (resumable, checksum-verified, cached) and extract."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from recsys.errors import RecsysError

CHUNK = 1 << 20


def registry() -> dict[str, dict]:
    """Name -> {url, md5, folder, ratings, description, licence}."""
    return json.loads(resources.files("recsys.data").joinpath("registry.json").read_text())


def data_home() -> Path:
    """Cache folder: $RECSYS_DATA_HOME, else ~/.cache/recsys."""
    return Path(os.environ.get("RECSYS_DATA_HOME", Path.home() / ".cache" / "recsys"))


def download(name: str, *, cache_dir: str | Path | None = None, progress: bool = True,
             spec: dict | None = None) -> Path:
    """Path to the ratings file of data set `name`, downloading and extracting it once.

    `spec` overrides the registry entry (same keys), e.g. for a mirror.
    """
    known = registry()
    if spec is None:
        if name not in known:
            raise RecsysError(f"unknown data set {name!r}; known: {', '.join(sorted(known))}")
        spec = known[name]
    root = Path(cache_dir) if cache_dir else data_home()
    ratings = root / spec["folder"] / spec["ratings"]
    if ratings.exists():
        return ratings
    archive = fetch(spec["url"], root / Path(spec["url"]).name, md5=spec["md5"], progress=progress)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    if not ratings.exists():
        raise RecsysError(f"{archive}: archive has no {spec['folder']}/{spec['ratings']}")
    return ratings


def fetch(url: str, dest: Path, *, md5: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part` with an HTTP Range request,
    and verify its MD5; a mismatch deletes the file and raises.
    """
    if dest.exists() and _md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
            with part.open("ab" if resumed else "wb") as out, tqdm(
                total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                desc=dest.name, disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            pass
        else:
            raise RecsysError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RecsysError(f"download of {url} failed ({exc}); run again to resume") from exc
    digest = _md5(part)
    if digest != md5:
        part.unlink()
        raise RecsysError(f"download of {url}: MD5 {digest} does not match the expected {md5}")
    part.replace(dest)
    return dest


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
