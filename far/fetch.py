"""Download and verify the official pre-trained and released fine-tuned checkpoints (``far fetch``).

The registry (``params/checkpoints.yaml``) says, per checkpoint, where it can
be downloaded from (Google Drive ids, Hugging Face files) and, when known, its
size and SHA-256. ``fetch_checkpoint`` tries each source in order and only
ever exposes a file at ``<dest>/<filename>`` once it is complete and verified:

* the transfer streams into ``<dest>/.<filename>.part-<pid>`` and is renamed
  with ``os.replace`` (atomic on one file system) after every check passed, so
  an interrupted, truncated, HTML or wrong-hash download never leaves a file
  that a later rule could mistake for the checkpoint;
* hashes unknown to the registry are recorded on first sight in
  ``<dest>/checkpoints.lock.json`` and enforced from then on, so the user's
  YAML is never rewritten by a tool;
* a file already at the final path (downloaded earlier or placed by hand) is
  verified the same way and then left alone: the command is idempotent and
  cheap, which is what Snakemake needs;
* a transfer is bounded: never more bytes than the known size, never longer
  than ``--timeout`` seconds per source (a trickle is cut off), and the URL the
  bytes finally came from (after redirects) is always logged.

Deliberately independent of torch: a checkpoint is sanity-checked by its
magic bytes (zip = ``torch.save``, pickle, safetensors), not by loading it.

Base URLs can be redirected (tests, mirrors) with the ``FAR_GDRIVE_URL`` and
``FAR_HF_URL`` environment variables (``HF_ENDPOINT`` is honoured as well) or
the ``gdrive_base``/``hf_base`` parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import html
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urljoin, urlsplit

from far.config import ConfigError, check_choice, fail, from_mapping, read_yaml

try:  # POSIX advisory locks; parallel Snakemake jobs update the lock file together.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_REGISTRY = Path("params/checkpoints.yaml")
DEFAULT_DEST = Path("data/checkpoints")
LOCK_FILENAME = "checkpoints.lock.json"
DEFAULT_TIMEOUT = 3600.0  # seconds one source may take in all (connection and every byte)
DEFAULT_STALL_TIMEOUT = 60.0  # seconds to wait for a connection or for the next bytes

DEFAULT_GDRIVE_URL = "https://drive.usercontent.google.com"
DEFAULT_HF_URL = "https://huggingface.co"

# Exit codes of `far fetch`.
EXIT_OK = 0
EXIT_INVALID = 1  # bad registry, or a file at the final path that fails verification
EXIT_UNAVAILABLE = 2  # no source could deliver the file: place it by hand

METHODS = ("videomae", "mvd")
BACKBONES = ("vit_s", "vit_b")
DATASETS = ("k400", "ssv2")
# ``finetuned``: a released fine-tuned model, ``{"module": state_dict}`` with its head
# (far.checkpoints reads it as its "finetuned" format); HF fine-tuned files are hf_videomae.
FORMATS = ("videomae_pretrain", "mvd_pretrain", "hf_videomae", "finetuned")
# Which formats each method may have: catches a copy-paste of the wrong block.
# (MVD released no fine-tuned models; an MVD fine-tune of one's own exports as finetuned.)
METHOD_FORMATS = {"videomae": ("videomae_pretrain", "hf_videomae", "finetuned"), "mvd": ("mvd_pretrain", "finetuned")}
# file: a copy on a disk this machine reads (a cluster's shared storage, or the file the
# embedded default exports as its stand-in for a released model), copied and verified.
SOURCE_KINDS = ("gdrive", "huggingface", "file")
# What an entry holds: a self-supervised pre-training (fine-tuned by the grid) or a released
# fine-tuned model with its published test accuracy (tested by `far data check`).
KINDS = ("pretrained", "finetuned")
# The test protocol of each dataset (clips x crops), as VideoMAE's MODEL_ZOO.md states it.
PROTOCOL_VIEWS = {"ssv2": (2, 3), "k400": (5, 3)}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
# HTML pages (Drive's confirm / quota pages) are small; never read more than this as text.
_MAX_HTML = 2 << 20


# --------------------------------------------------------------------------- errors


class FetchError(Exception):
    """Base class of everything ``far fetch`` reports to the user."""


class RegistryError(FetchError, ConfigError):
    """The registry YAML is malformed: far.config's error (``<file>: <field>: <problem>``)."""


class VerificationError(FetchError):
    """A file has the wrong size/SHA-256 or is not a checkpoint at all."""


class HtmlPageError(FetchError):
    """A server answered with an HTML page where a checkpoint was expected."""


class AllSourcesFailed(FetchError):
    """No source delivered a verified file; the message says how to place it by hand."""

    def __init__(self, message: str, attempts: list[tuple[str, str]]):
        super().__init__(message)
        self.attempts = attempts


# ------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be downloaded from."""

    kind: str  # gdrive | huggingface | file
    id: str | None = None  # gdrive file id (None: not known, see the YAML comment)
    repo: str | None = None  # huggingface repo, e.g. MCG-NJU/videomae-base
    file: str | None = None  # huggingface file in that repo
    path: str | None = None  # file: a path on this machine (relative: to the working directory)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, SOURCE_KINDS)
        allowed = {"gdrive": ("id",), "huggingface": ("repo", "file"), "file": ("path",)}[self.kind]
        for name in ("id", "repo", "file", "path"):
            if name not in allowed and getattr(self, name) is not None:
                fail(name, f"not a field of a {self.kind} source (its fields: kind, {', '.join(allowed)})")
        # A Drive id may be null: an unknown id is recorded honestly rather than invented.
        if self.id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{10,}", self.id):
            fail("id", f"not a Google Drive file id: {self.id!r}")
        if self.kind == "file" and not (self.path or "").strip():
            fail("path", "must be a file path")
        if self.kind == "huggingface":
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo or ""):
                fail("repo", f"must be OWNER/NAME, got {self.repo!r}")
            if not self.file or self.file.startswith("/") or ".." in self.file:
                fail("file", f"must be a file path inside the repo, got {self.file!r}")

    def describe(self) -> str:
        """Short label used in progress lines and error messages."""
        if self.kind == "gdrive":
            return f"gdrive id={self.id}"
        if self.kind == "file":
            return f"file {self.path}"
        return f"huggingface {self.repo}/{self.file}"

    def manual_url(self) -> str | None:
        """The URL a person opens in a browser to download the file by hand."""
        if self.kind == "gdrive":
            return f"https://drive.google.com/file/d/{self.id}/view" if self.id else None
        if self.kind == "file":
            return None
        return f"{DEFAULT_HF_URL}/{self.repo}/resolve/main/{self.file}"


@dataclass(frozen=True)
class Published:
    """The test result published with a released fine-tuned model, and where it was read.
    Every field is required (``top5: null`` where the source gives none)."""

    dataset: str  # k400 | ssv2: the data it was fine-tuned and tested on
    top1: float  # percent
    top5: float | None  # percent
    clips: int  # temporal views
    crops: int  # spatial views
    source: str  # where the numbers were published (a page, a table row)

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if not 0 <= self.top1 <= 100:
            fail("top1", f"must be a percentage in [0, 100], got {self.top1!r}")
        if self.top5 is not None and not self.top1 <= self.top5 <= 100:
            fail("top5", f"must be null or a percentage in [top1, 100], got {self.top5!r}")
        if self.clips < 1:
            fail("clips", f"must be a positive integer, got {self.clips!r}")
        if self.crops not in (1, 3):
            fail("crops", f"must be 1 or 3 (what far test cuts), got {self.crops!r}")
        if not self.source.strip():
            fail("source", "must say where the numbers were published")


@dataclass(frozen=True)
class CheckpointSpec:
    """One registry entry (params/checkpoints.yaml documents the fields), validated when
    built: ``sha256`` and ``size`` are required but may be null (not yet known)."""

    name: str
    method: str
    backbone: str
    pretrain_dataset: str
    format: str
    filename: str
    sources: tuple[Source, ...]
    sha256: str | None
    size: int | None
    epochs: int | None = None
    teacher: str | None = None
    alternatives: tuple[str, ...] | None = None  # other entries holding the same weights
    description: str | None = None
    kind: str = "pretrained"
    published: Published | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            fail("name", f"must match {_NAME_RE.pattern}, got {self.name!r}")
        for key, choices in (("method", METHODS), ("backbone", BACKBONES), ("pretrain_dataset", DATASETS),
                             ("format", FORMATS), ("kind", KINDS)):
            check_choice(key, getattr(self, key), choices)
        if self.format not in METHOD_FORMATS[self.method]:
            fail("format", f"{self.format!r} is not a {self.method} format "
                           f"(expected one of {', '.join(METHOD_FORMATS[self.method])})")
        f = self.filename
        if not f or Path(f).name != f or f.startswith("."):
            fail("filename", f"must be a plain file name (no folder, no leading dot), got {f!r}")
        if f == LOCK_FILENAME:
            fail("filename", f"{LOCK_FILENAME} is reserved for the lock file")
        if self.sha256 is not None and not _SHA_RE.match(self.sha256):
            fail("sha256", f"must be null or 64 lowercase hex digits, got {self.sha256!r}")
        if self.size is not None and self.size <= 0:
            fail("size", f"must be null or a positive integer (bytes), got {self.size!r}")
        if self.epochs is not None and self.epochs <= 0:
            fail("epochs", f"must be a positive integer, got {self.epochs!r}")
        if self.teacher is not None:
            check_choice("teacher", self.teacher, ("vit_b", "vit_l", "vit_h"))
        for j, src in enumerate(self.sources):
            # One entry = one byte stream = one hash; an HF file has other keys than the Drive file.
            if src.kind != "file" and (src.kind == "huggingface") != (self.format == "hf_videomae"):
                fail(f"sources[{j}]", f"a {src.kind} source cannot deliver format {self.format!r}; "
                                      "Hugging Face files are format hf_videomae and belong in their own entry")
        # A fine-tuned entry is only useful with the number to compare against; a pre-training has none.
        if (self.kind == "finetuned") != (self.published is not None):
            fail("published", f"required for kind finetuned and only there (kind is {self.kind})")
        if self.kind == "pretrained" and self.format == "finetuned":
            fail("format", "'finetuned' needs kind: finetuned")
        if self.kind == "finetuned" and self.format not in ("finetuned", "hf_videomae"):
            fail("format", f"a fine-tuned entry is format finetuned or hf_videomae, got {self.format!r}")


Registry = dict[str, CheckpointSpec]


@dataclass(frozen=True)
class _RegistryFile:
    """The registry file's top level."""

    checkpoints: tuple[CheckpointSpec, ...]
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            fail("version", f"only version 1 is understood, got {self.version!r}")
        names: dict[str, int] = {}
        filenames: dict[str, str] = {}
        for i, spec in enumerate(self.checkpoints):
            if spec.name in names:
                fail(f"checkpoints[{i}].name", f"duplicate name {spec.name!r}")
            if spec.filename in filenames:
                fail(f"checkpoints[{i}].filename", f"{spec.filename!r} already used by {filenames[spec.filename]!r}")
            names[spec.name] = i
            filenames[spec.filename] = spec.name
        for i, spec in enumerate(self.checkpoints):
            for alt in spec.alternatives or ():
                if alt not in names:
                    fail(f"checkpoints[{i}].alternatives", f"unknown checkpoint {alt!r}")


def load_registry(path: str | os.PathLike[str] = DEFAULT_REGISTRY) -> Registry:
    """Read and validate the checkpoint registry YAML; return ``{name: spec}`` in file order.

    Raises :class:`RegistryError` (far.config's error) naming the file and the field.
    """
    try:
        entries = from_mapping(_RegistryFile, read_yaml(path)).checkpoints
    except ConfigError as err:
        raise RegistryError(err.field, err.problem, str(path)) from None
    return {spec.name: spec for spec in entries}


# ------------------------------------------------------------------------ lock file


def lock_path(dest: str | os.PathLike[str]) -> Path:
    """Where the recorded sizes/hashes of ``dest`` live."""
    return Path(dest) / LOCK_FILENAME


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Serialise read-modify-write of the lock file between concurrent fetches."""
    dest.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(dest / f".{LOCK_FILENAME}.flock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_lock(dest: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Return ``{name: {filename, size, sha256, ...}}`` recorded in ``dest``'s lock file ({} if none)."""
    path = lock_path(dest)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise VerificationError(f"{path}: corrupt lock file ({exc}); fix or delete it (it is re-recorded)") from None
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise VerificationError(f"{path}: expected {{\"version\": 1, \"checkpoints\": {{...}}}}")
    return entries


def _update_lock(dest: Path, name: str, entry: dict[str, Any]) -> None:
    """Set ``name``'s entry in the lock file, atomically and under the flock."""
    with _locked(dest):
        entries = read_lock(dest)
        entries[name] = entry
        payload = json.dumps({"version": 1, "checkpoints": dict(sorted(entries.items()))}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{LOCK_FILENAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            os.replace(tmp, lock_path(dest))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@dataclass(frozen=True)
class Expected:
    """What a file must match, and where that knowledge came from."""

    size: int | None
    sha256: str | None
    origin: str  # "registry", "lock file" or "nothing"


def expected_for(spec: CheckpointSpec, dest: str | os.PathLike[str]) -> Expected:
    """Registry values win; otherwise the lock file's first-seen record; otherwise nothing."""
    if spec.sha256 is not None or spec.size is not None:
        return Expected(spec.size, spec.sha256, "registry")
    rec = read_lock(dest).get(spec.name)
    # A record for another filename is stale (the registry entry was changed): ignore it.
    if rec and rec.get("filename") == spec.filename:
        return Expected(rec.get("size"), rec.get("sha256"), f"lock file {lock_path(dest)}")
    return Expected(None, None, "nothing")


# ----------------------------------------------------------------- file sanity check


def sniff_format(head: bytes, size: int) -> str:
    """Classify a file by its first bytes: ``zip``, ``pickle`` or ``safetensors``.

    Raises ``VerificationError`` for empty files, HTML/text pages and anything
    else, so that an error page saved under a checkpoint's name is caught.
    """
    if size == 0 or not head:
        return _raise("the file is empty")
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith(b"<"):  # <!DOCTYPE html>, <html>, <?xml ...
        return _raise("the file is an HTML page, not a checkpoint (a Drive quota/confirm/error page?)")
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save since torch 1.6
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # legacy torch.save / plain pickle
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 0 < header_len <= size - 8:
            return "safetensors"
    return _raise(f"unrecognised content (first bytes {head[:8]!r}): not a torch zip, pickle or safetensors file")


def _raise(msg: str) -> str:
    raise VerificationError(msg)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: Expected, sha256: str | None = None) -> tuple[int, str]:
    """Verify ``path`` against ``expected``; return (size, sha256). ``sha256`` skips re-hashing."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        sniff_format(fh.read(16), size)
    if expected.size is not None and size != expected.size:
        raise VerificationError(f"size {size} bytes, expected {expected.size} (from {expected.origin})")
    digest = sha256 or _sha256_file(path)
    if expected.sha256 is not None and digest != expected.sha256:
        raise VerificationError(f"SHA-256 {digest}, expected {expected.sha256} (from {expected.origin})")
    return size, digest


# ---------------------------------------------------------------------- downloading


def _base(explicit: str | None, *env_vars: str, default: str) -> str:
    for value in (explicit, *(os.environ.get(v) for v in env_vars)):
        if value:
            return value.rstrip("/")
    return default


def gdrive_url(file_id: str, base: str | None = None) -> str:
    """Direct-download URL of a Drive file; ``confirm=t`` skips the virus-scan page when Drive allows it."""
    base = _base(base, "FAR_GDRIVE_URL", default=DEFAULT_GDRIVE_URL)
    return f"{base}/download?" + urlencode({"id": file_id, "export": "download", "confirm": "t"})


def hf_url(repo: str, file: str, base: str | None = None) -> str:
    """``resolve`` URL of a file on the Hugging Face hub (or a mirror)."""
    base = _base(base, "FAR_HF_URL", "HF_ENDPOINT", default=DEFAULT_HF_URL)
    return f"{base}/{repo}/resolve/main/{file}"


def _is_html(resp: Any) -> bool:
    return "text/html" in resp.headers.get("Content-Type", "").lower()


def drive_confirm_url(page: str, page_url: str, file_id: str, base: str | None = None) -> str | None:
    """Find the "download anyway" target in a Drive interstitial page, or None.

    Handles the current form (``<form action=... >`` with hidden ``id``,
    ``export``, ``confirm``, ``uuid`` inputs) and the older link carrying a
    ``confirm=TOKEN`` query parameter.
    """
    form = re.search(r"<form\b[^>]*\baction=\"([^\"]+)\"[^>]*>(.*?)</form>", page, re.S | re.I)
    if form:
        inputs = dict(
            re.findall(r"<input\b[^>]*\bname=\"([^\"]+)\"[^>]*\bvalue=\"([^\"]*)\"", form.group(2), re.I)
        )
        if inputs.get("id") or inputs.get("confirm"):
            inputs.setdefault("id", file_id)
            action = urljoin(page_url, html.unescape(form.group(1)))
            return action.split("?")[0] + "?" + urlencode({k: html.unescape(v) for k, v in inputs.items()})
    token = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if token:
        params = {"id": file_id, "export": "download", "confirm": token.group(1)}
        uuid = re.search(r"uuid=([0-9A-Za-z_-]+)", page)
        if uuid:
            params["uuid"] = uuid.group(1)
        return f"{_base(base, 'FAR_GDRIVE_URL', default=DEFAULT_GDRIVE_URL)}/download?" + urlencode(params)
    return None


def _html_title(page: str) -> str:
    m = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    return " ".join(html.unescape(m.group(1)).split()) if m else "no title"


@dataclass
class _Download:
    size: int
    sha256: str
    url: str  # where the bytes came from, after redirects
    requested: str = ""  # the source's own URL (set by _download_source)


def _body(resp: Any, deadline: float, timeout: float, *, limit: int | None = None,
          decode: bool = False) -> Iterator[bytes]:
    """The response body in pieces as they arrive, until EOF or ``limit`` bytes.

    Raises ``FetchError`` once ``deadline`` (``time.monotonic``) has passed: ``read1``
    returns whatever has arrived, so a server trickling a byte at a time cannot hold one
    read call open the way a full-size ``read`` (or ``iter_content``) would.
    """
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read  # read1: urllib3 >= 2.3
    got = 0
    while limit is None or got < limit:
        if time.monotonic() > deadline:
            raise FetchError(f"not complete within --timeout {timeout:g} s; aborted after {got} bytes")
        chunk = read(_CHUNK if limit is None else min(_CHUNK, limit - got), decode_content=decode)
        if not chunk:
            return
        got += len(chunk)
        yield chunk


def _stream(session: Any, url: str, tmp: Path, *, deadline: float, timeout: float, stall: float,
            expected: Expected, label: str, progress: bool) -> _Download | str:
    """GET ``url`` into ``tmp``; return the HTML text instead when the server sends a page.

    Raises ``FetchError`` on HTTP errors, on a body shorter than its Content-Length
    (``urllib3`` raises for most truncations itself; the byte count is checked again so
    no path relies on that), on more bytes than ``expected.size`` (refused from the
    Content-Length, or cut off at the first byte too many) and past ``deadline``.
    """
    import requests
    import urllib3
    from tqdm import tqdm

    wait = min(stall, deadline - time.monotonic())
    if wait <= 0:
        raise FetchError(f"not complete within --timeout {timeout:g} s")
    # identity encoding: the byte count must be comparable with Content-Length.
    headers = {"Accept-Encoding": "identity", "User-Agent": "far-fetch/1"}
    with session.get(url, stream=True, timeout=(wait, wait), headers=headers, allow_redirects=True) as resp:
        if resp.status_code != 200:
            raise FetchError(f"HTTP {resp.status_code} {resp.reason} from {resp.url}")
        if _is_html(resp):
            page = b"".join(_body(resp, deadline, timeout, limit=_MAX_HTML, decode=True))
            return page.decode(resp.encoding or "utf-8", "replace")
        total = resp.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        cap = expected.size
        if cap is not None and total_n is not None and total_n > cap:
            raise FetchError(f"{resp.url} announces {total_n} bytes but the file has {cap} "
                             f"(from {expected.origin}); not downloaded")
        digest = hashlib.sha256()
        written = 0
        try:
            with open(tmp, "wb") as fh, tqdm(
                total=total_n, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not progress, leave=False, file=sys.stderr,
            ) as bar:
                # Reading at most one byte past the known size proves a too-long stream.
                for chunk in _body(resp, deadline, timeout, limit=None if cap is None else cap + 1):
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                if cap is not None and written > cap:
                    raise FetchError(f"{resp.url} sent more than the {cap} bytes the file has "
                                     f"(from {expected.origin}); aborted after {written} bytes")
                fh.flush()
                os.fsync(fh.fileno())  # the rename must not publish data still in the page cache only
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise FetchError(f"transfer interrupted after {written} bytes: {type(exc).__name__}: {exc}") from exc
        if total_n is not None and written != total_n:
            raise FetchError(f"short read: got {written} of {total_n} bytes (Content-Length)")
        return _Download(written, digest.hexdigest(), resp.url)


def _download_source(
    spec: CheckpointSpec, src: Source, tmp: Path, *, expected: Expected, timeout: float, stall: float,
    progress: bool, gdrive_base: str | None, hf_base: str | None,
) -> _Download:
    """Download one source into ``tmp`` within ``timeout`` seconds, following Drive's confirmation page if needed."""
    if src.kind == "file":
        return _copy_source(Path(src.path or ""), tmp, expected)
    import requests

    if src.kind == "huggingface":
        url = hf_url(src.repo or "", src.file or "", hf_base)
    else:
        if not src.id:
            raise FetchError("no Drive id in the registry (look it up in the repository's MODEL_ZOO.md)")
        url = gdrive_url(src.id, gdrive_base)
    deadline = time.monotonic() + timeout  # one budget for every hop of this source
    first = url
    with requests.Session() as session:  # keeps Drive's download_warning cookies between hops
        # Drive may interpose up to two pages (virus-scan warning, then a form); more is a refusal.
        for _hop in range(3):
            result = _stream(session, url, tmp, deadline=deadline, timeout=timeout, stall=stall, expected=expected,
                             label=spec.name, progress=progress)
            if isinstance(result, _Download):
                result.requested = first
                return result
            page = result
            nxt = drive_confirm_url(page, url, src.id or "", gdrive_base) if src.kind == "gdrive" else None
            if nxt is None or nxt == url:
                raise HtmlPageError(
                    f"server returned an HTML page instead of the file ({_html_title(page)!r}); "
                    "Drive does this for quota limits, removed files or sign-in walls"
                )
            url = nxt
        raise HtmlPageError("Drive kept answering with confirmation pages")


def _copy_source(path: Path, tmp: Path, expected: Expected) -> _Download:
    """Copy a ``file`` source into ``tmp``, hashing on the way; never more than the known size."""
    if not path.is_file():
        raise FetchError(f"{path}: no such file")
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise VerificationError(f"{path}: size {size} bytes, expected {expected.size} (from {expected.origin})")
    digest = hashlib.sha256()
    with open(path, "rb") as src, open(tmp, "wb") as out:
        for block in iter(lambda: src.read(_CHUNK), b""):
            digest.update(block)
            out.write(block)
    url = path.resolve().as_uri()
    return _Download(size, digest.hexdigest(), url, requested=url)


def _part_path(dest: Path, spec: CheckpointSpec) -> Path:
    return dest / f".{spec.filename}.part-{os.getpid()}"


def _remove_stale_parts(dest: Path, spec: CheckpointSpec) -> None:
    """Delete temp files left by killed fetches (their pid no longer runs)."""
    for part in dest.glob(f".{spec.filename}.part-*"):
        pid = part.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        except PermissionError:
            pass  # another user's live process


def _record(dest: Path, spec: CheckpointSpec, size: int, sha256: str, origin: str, first_seen: bool, path: Path) -> None:
    st = path.stat()
    _update_lock(dest, spec.name, {
        "filename": spec.filename,
        "size": size,
        "sha256": sha256,
        "source": origin,
        "first_seen_unverified": first_seen,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # Lets the next call skip re-hashing an unchanged file (Snakemake calls us often).
        "verified_mtime_ns": st.st_mtime_ns,
    })


def manual_instructions(spec: CheckpointSpec, dest: str | os.PathLike[str]) -> str:
    """Tell a person exactly what to download and where to put it."""
    final = Path(dest) / spec.filename
    lines = ["Download it by hand (any one of):" if len(spec.sources) > 1 else "Download it by hand:"]
    urls = [(s, s.manual_url()) for s in spec.sources]
    for src, url in urls:
        if url:
            lines.append(f"  - {url}")
        elif src.kind == "file":
            lines.append(f"  - copy {src.path} (a file source: it was not there)")
        else:
            lines.append(f"  - {src.describe()}: Drive id unknown, look it up in the {spec.method} repository's MODEL_ZOO.md")
    lines.append(f"and save it (renamed) as:\n  {final}")
    if not final.is_absolute():
        lines.append(f"  (absolute: {final.resolve()})")
    again = f"far fetch {spec.name}" + ("" if Path(dest) == DEFAULT_DEST else f" --dest {dest}")
    lines.append(
        f"then run `{again}`: it verifies the file "
        "(size/SHA-256 from the registry or lock file, or records them on first sight)."
    )
    if spec.alternatives:
        alts = ", ".join(f"`far fetch {a}`" for a in spec.alternatives)
        lines.append(f"The same weights in another format: {alts}.")
    return "\n".join(lines)


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr)


def fetch_checkpoint(
    name: str,
    registry: Registry | str | os.PathLike[str] = DEFAULT_REGISTRY,
    dest: str | os.PathLike[str] = DEFAULT_DEST,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    progress: bool = True,
    gdrive_base: str | None = None,
    hf_base: str | None = None,
    rehash: bool = False,
    log: Callable[[str], None] = _log_default,
) -> Path:
    """Make sure ``<dest>/<filename>`` of checkpoint ``name`` exists and is verified; return its path.

    An existing file is verified (and otherwise left untouched); else each
    source is tried in order, each for at most ``timeout`` seconds in all and
    ``stall_timeout`` seconds without bytes. Raises ``VerificationError`` when the existing
    file is bad, ``AllSourcesFailed`` when nothing could be downloaded, and
    ``RegistryError``/``FetchError`` for unknown names or a bad registry.
    """
    reg = registry if isinstance(registry, dict) else load_registry(registry)
    if name not in reg:
        raise FetchError(f"unknown checkpoint {name!r}; known: {', '.join(reg)}")
    spec = reg[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / spec.filename
    expected = expected_for(spec, dest)

    if final.exists():
        return _verify_existing(spec, final, dest, expected, rehash=rehash, log=log)

    _remove_stale_parts(dest, spec)
    attempts: list[tuple[str, str]] = []
    for src in spec.sources:
        tmp = _part_path(dest, spec)
        try:
            log(f"far fetch: {name}: trying {src.describe()}")
            got = _download_source(spec, src, tmp, expected=expected, timeout=timeout, stall=stall_timeout,
                                   progress=progress, gdrive_base=gdrive_base, hf_base=hf_base)
            log(f"far fetch: {name}: {got.size} bytes from {got.url}")
            moved = urlsplit(got.url).hostname != urlsplit(got.requested).hostname
            if moved and expected.sha256 is None:
                log(f"far fetch: {name}: WARNING: redirected from {urlsplit(got.requested).hostname} to another "
                    f"host, {urlsplit(got.url).hostname}, and no SHA-256 is known to check the file against; "
                    "compare the recorded hash with a published one before trusting it")
            try:
                _check(tmp, expected, sha256=got.sha256)
            except VerificationError as exc:
                raise VerificationError(f"downloaded file rejected: {exc}") from None
            first_seen = expected.sha256 is None
            _record(dest, spec, got.size, got.sha256, src.describe(), first_seen, tmp)
            os.replace(tmp, final)
            if first_seen:
                log(f"far fetch: {name}: no known hash; recorded size {got.size} and SHA-256 {got.sha256} "
                    f"in {lock_path(dest)} (later runs verify against it)")
            log(f"far fetch: {name}: OK -> {final}")
            return final
        except FetchError as exc:
            attempts.append((src.describe(), str(exc)))
            log(f"far fetch: {name}: {src.describe()} failed: {exc}")
        except Exception as exc:  # connection refused, DNS, timeouts, ... : try the next source
            attempts.append((src.describe(), f"{type(exc).__name__}: {exc}"))
            log(f"far fetch: {name}: {src.describe()} failed: {type(exc).__name__}: {exc}")
        finally:
            # Whatever happened (including Ctrl-C), no partial file survives.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    tried = "\n".join(f"  {i}. {what}: {err}" for i, (what, err) in enumerate(attempts, 1))
    raise AllSourcesFailed(
        f"could not download checkpoint {name!r} from any of its {len(attempts)} source(s):\n{tried}\n"
        f"No file was written to {final}.\n" + manual_instructions(spec, dest),
        attempts,
    )


def _verify_existing(spec: CheckpointSpec, final: Path, dest: Path, expected: Expected, *,
                     rehash: bool, log: Callable[[str], None]) -> Path:
    """Verify a file already at the final path (an earlier download or placed by hand)."""
    st = final.stat()
    rec = read_lock(dest).get(spec.name) or {}
    cached = (
        not rehash
        and rec.get("filename") == spec.filename
        and rec.get("size") == st.st_size
        and rec.get("verified_mtime_ns") == st.st_mtime_ns
        and (expected.sha256 is None or rec.get("sha256") == expected.sha256)
        and (expected.size is None or expected.size == st.st_size)
    )
    if cached:  # unchanged since it was last verified: skip hashing hundreds of MB
        return final
    try:
        size, digest = _check(final, expected)
    except VerificationError as exc:
        raise VerificationError(
            f"{final} exists but fails verification: {exc}.\n"
            f"It was left in place. Remove it and run `far fetch {spec.name}` again "
            "(or download the right file by hand)."
        ) from None
    first_seen = expected.sha256 is None
    _record(dest, spec, size, digest, "existing file", first_seen, final)
    if first_seen:
        log(f"far fetch: {spec.name}: {final} has no known hash; recorded as unverified-first-seen "
            f"(size {size}, SHA-256 {digest}) in {lock_path(dest)}")
    else:
        log(f"far fetch: {spec.name}: {final} verified against {expected.origin}")
    return final


# ----------------------------------------------------------------------------- CLI


def format_table(registry: Registry, dest: str | os.PathLike[str] = DEFAULT_DEST) -> str:
    """The registry as a text table, with whether each file is present and how it is verified."""
    lock = read_lock(dest) if lock_path(dest).exists() else {}
    head = ("name", "method", "backbone", "pretrain", "epochs", "format", "published", "sources", "hash", "present",
            "filename")
    rows = [head]
    for s in registry.values():
        hash_from = "registry" if s.sha256 else ("lock" if s.name in lock else "-")
        rows.append((
            s.name, s.method + (f"({s.teacher})" if s.teacher else ""), s.backbone, s.pretrain_dataset,
            str(s.epochs or "-"), s.format,
            f"{s.published.dataset} {s.published.top1:g} ({s.published.clips}x{s.published.crops})" if s.published else "-",
            ",".join(src.kind for src in s.sources), hash_from,
            "yes" if (Path(dest) / s.filename).exists() else "no", s.filename,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(rows[0]), fmt(tuple("-" * w for w in widths)), *map(fmt, rows[1:])])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="far fetch",
        description="Download and verify official pre-trained and released fine-tuned checkpoints into DEST/<filename>.",
        epilog="Exit codes: 0 ok; 1 bad registry or a present file fails verification; "
               "2 no source could deliver the file (the message says how to place it by hand).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="checkpoint name(s) from the registry")
    parser.add_argument("--list", action="store_true", help="print the registry as a table and exit")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="destination folder (default: %(default)s)")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="registry YAML (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds one source may take in all, connection and every byte included; "
                             "a slower transfer is aborted (default: %(default)s)")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT,
                        help="seconds to wait for a connection or for the next bytes (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--rehash", action="store_true", help="re-hash present files even if unchanged since last verified")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``far fetch``."""
    args = build_parser().parse_args(argv)
    try:
        registry = load_registry(args.registry)
    except FetchError as exc:
        print(f"far fetch: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.list:
        print(format_table(registry, args.dest))
        return EXIT_OK
    if not args.names:
        print("far fetch: give a checkpoint NAME (see `far fetch --list`)", file=sys.stderr)
        return EXIT_INVALID
    status = EXIT_OK
    for name in args.names:
        try:
            path = fetch_checkpoint(name, registry, args.dest, timeout=args.timeout, stall_timeout=args.stall_timeout,
                                    progress=not args.no_progress and sys.stderr.isatty(), rehash=args.rehash)
            print(path)
        except AllSourcesFailed as exc:
            print(f"far fetch: {exc}", file=sys.stderr)
            status = max(status, EXIT_UNAVAILABLE)
        except FetchError as exc:
            print(f"far fetch: {name}: {exc}", file=sys.stderr)
            status = max(status, EXIT_INVALID)
    return status


if __name__ == "__main__":
    sys.exit(main())
