"""Where experiments live: a local folder, or a URI (`s3://bucket/prefix`, `gs://...`, `file:///abs`...).

Ray Tune takes the same `storage_path` and reads and writes it through pyarrow filesystems
(`pyarrow.fs.FileSystem.from_uri`); this module goes through the same door, so that what it checks,
reads and writes is what Ray does. S3 endpoints and credentials come from the environment, as for Ray:
`AWS_ENDPOINT_URL` (an S3-compatible server), `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`.

A location is a `Path` (local, absolute) or a `str` (a remote URI). The analysis reads local folders
only: `local_copy` downloads an experiment (without its checkpoints) and `upload` sends the files
written from it back. No Ray import.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Union
from urllib.parse import parse_qs, urlsplit

from t2s_ray.io import atomic_dir

if TYPE_CHECKING:
    import pyarrow.fs

# pyarrow is imported inside the functions that use it: the CLI imports this module, and pyarrow would
# add ~0.3 s to every `t2s-ray --help`.

Location = Union[Path, str]
"""A local folder (absolute `Path`) or a remote URI (`str`)."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
S3_SCHEMES = ("s3",)
CONNECT_TIMEOUT_S = 3.0
"""How long `check_writable` waits for an S3 endpoint to accept a connection (pyarrow retries for ~6 s)."""
SKIPPED_IN_COPIES = ("checkpoint_*", ".validate_storage_marker", ".t2s-probe-*")
"""Not downloaded by `local_copy`: checkpoints (the analysis reads none) and storage probes."""


class StorageError(ValueError):
    """A storage location is malformed, unreachable or not writable; the message names it and the fix."""


def is_uri(text: str | os.PathLike) -> bool:
    """True for `scheme://...` (including `file://`), False for a plain path."""
    return isinstance(text, str) and bool(_URI.match(text))


def normalize(value: str | os.PathLike) -> Location:
    """A local path (or `file:///abs`) as an absolute `Path`; any other URI as given, minus a trailing '/'."""
    if not is_uri(value):
        return Path(value).expanduser().resolve()
    if value.lower().startswith("file://"):
        fs, path = filesystem(value)
        return Path(path).resolve()
    base, sep, query = value.partition("?")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.rstrip('/')}{sep}{query}"


def join(location: Location, *parts: str) -> Location:
    """`location / part / ...`, for a URI before its `?query` (e.g. `?endpoint_override=...`)."""
    if isinstance(location, Path):
        return location.joinpath(*parts)
    base, sep, query = location.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def filesystem(uri: str, option: str = "--storage") -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow filesystem, path in it) for `uri`, as Ray resolves it; `StorageError` for an unusable URI."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as e:
        raise StorageError(explain(e, uri, option)) from None


def explain(error: Exception, uri: str, option: str = "--storage") -> str:
    """One line: what went wrong with `uri` and how to fix it, from a pyarrow error."""
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    scheme = urlsplit(uri).scheme
    if "Unrecognized filesystem type" in text:
        return (
            f"{option} {uri}: the scheme {scheme}:// is not supported by pyarrow here; use a local folder or "
            f"s3://, gs://, abfs://, hdfs://, file://"
        )
    if "NO_SUCH_BUCKET" in text or "bucket does not exist" in text or re.search(r"Bucket '.*' not found", text):
        bucket = urlsplit(uri).netloc
        return (
            f"{option} {uri}: the bucket {bucket!r} does not exist; create it first (e.g. `aws s3 mb "
            f"s3://{bucket}`, adding --endpoint-url for an S3-compatible server) or fix the name"
        )
    if re.search(
        r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|credential|Forbidden|"
        r"HTTP response code: 403|UNAUTHORIZED",
        text,
        re.IGNORECASE,
    ):
        return (
            f"{option} {uri}: access denied ({first}); set credentials that may write there: "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for s3://, "
            f"GOOGLE_APPLICATION_CREDENTIALS for gs://"
        )
    if re.search(r"NETWORK_CONNECTION|curlCode|Could not connect|resolve host|Timeout", text, re.IGNORECASE):
        return (
            f"{option} {uri}: cannot reach the storage service ({first}); check the network, and "
            f"AWS_ENDPOINT_URL for an S3-compatible server (e.g. http://127.0.0.1:9000)"
        )
    return f"{option} {uri}: {first}"


def s3_endpoint(uri: str) -> tuple[str, str] | None:
    """(endpoint URL, where it was set) of an `s3://` URI when one is configured: the URI's
    `endpoint_override`, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (read by pyarrow's AWS SDK)."""
    parts = urlsplit(uri)
    if parts.scheme not in S3_SCHEMES:
        return None
    query = parse_qs(parts.query)
    if "endpoint_override" in query:
        url = query["endpoint_override"][0]
        return (url if "://" in url else f"{query.get('scheme', ['https'])[0]}://{url}"), "endpoint_override"
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var], var
    return None


def check_reachable(uri: str, option: str = "--storage", timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds when a configured S3 endpoint does not accept connections (pyarrow would retry)."""
    found = s3_endpoint(uri)
    if found is None:
        return
    url, source = found
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as e:
        raise StorageError(
            f"{option} {uri}: nothing answers at the S3 endpoint {url} (set by {source}): "
            f"{e.strerror or e}; start the server or fix {source}"
        ) from None


def check_writable(uri: str, option: str = "--storage") -> None:
    """Write and delete a small probe object under `uri`; `StorageError` naming the input and the fix."""
    import pyarrow

    check_reachable(uri, option)
    fs, path = filesystem(uri, option)
    probe = f"{path.rstrip('/')}/.t2s-probe-{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"t2s-ray storage probe\n")
        fs.delete_file(probe)
    except (OSError, pyarrow.ArrowException) as e:
        raise StorageError(explain(e, uri, option)) from None


def exists(location: Location) -> bool:
    """True when a file or folder is at `location`."""
    import pyarrow.fs

    if isinstance(location, Path):
        return location.exists()
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: Location) -> bytes:
    """The bytes of the file at `location`; `FileNotFoundError` when there is none."""
    import pyarrow.fs

    if isinstance(location, Path):
        return location.read_bytes()
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"no file at {location}")
    with fs.open_input_stream(path) as f:
        return f.read()


def names(location: Location) -> list[str]:
    """The names of the files and folders directly in the folder at `location`, sorted; [] when there is none."""
    import pyarrow.fs

    if isinstance(location, Path):
        return sorted(p.name for p in location.iterdir()) if location.is_dir() else []
    fs, path = filesystem(location)
    return sorted(i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)))


def write_bytes(location: str, data: bytes) -> str:
    """Write `data` as the object at the URI `location` (replaced whole: object stores have no partial writes)."""
    fs, path = filesystem(location)
    with fs.open_output_stream(path) as f:
        f.write(data)
    return location


def _skipped(relative: str, skip: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.split("/") for pattern in skip)


def download(uri: str, dest: Path, skip: Iterable[str] = SKIPPED_IN_COPIES) -> int:
    """Copy every file under `uri` into `dest` (same layout), except those with a component matching `skip`;
    return how many. `dest` is replaced whole, so files deleted at `uri` do not linger in it."""
    import pyarrow.fs

    fs, root = filesystem(uri)
    root = root.rstrip("/")
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_dir(dest) as tmp:
        for info in infos:
            relative = info.path[len(root) + 1 :]
            if info.type != pyarrow.fs.FileType.File or _skipped(relative, skip):
                continue
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
    return n


def upload(paths: Iterable[Path], uri: str) -> list[str]:
    """Copy each local file into the folder at `uri` under its own name; return the URIs written."""
    fs, root = filesystem(uri)
    written = []
    for path in paths:
        with open(path, "rb") as src, fs.open_output_stream(f"{root.rstrip('/')}/{path.name}") as out:
            shutil.copyfileobj(src, out)
        written.append(join(uri, path.name))
    return written


def cache_root() -> Path:
    """`$T2S_RAY_CACHE`, else `~/.cache/t2s-ray`: where t2s-ray keeps what it can rebuild (the data cache and the
    gloss evaluators unless `data.cache_dir` says otherwise, local copies of remote experiments)."""
    return Path(os.environ.get("T2S_RAY_CACHE") or "~/.cache/t2s-ray").expanduser()


def cache_dir(uri: str) -> Path:
    """Where `local_copy` puts the experiment at `uri`: <cache root>/experiments/<scheme>/<bucket>/<path>."""
    parts = urlsplit(uri)
    components = [parts.scheme, parts.netloc, *PurePosixPath(parts.path).parts[1:]]
    safe = [re.sub(r"[^A-Za-z0-9._=-]", "_", c) for c in components if c not in ("", ".", "..")]
    return cache_root().resolve().joinpath("experiments", *safe)


def local_copy(uri: str, dest: Path | None = None) -> Path:
    """Download the experiment at `uri` without its checkpoints (default into `cache_dir(uri)`); return the folder.

    `StorageError` when nothing is there."""
    import pyarrow

    check_reachable(uri, option="experiment")
    try:
        if not exists(uri):
            raise StorageError(
                f"experiment {uri} does not exist; pass the location `t2s-ray sweep` printed, "
                f"e.g. s3://bucket/prefix/<name>"
            )
        dest = dest or cache_dir(uri)
        download(uri, dest)
    except (OSError, pyarrow.ArrowException) as e:
        raise StorageError(explain(e, uri, "experiment")) from None
    return dest
