"""Where trained model artifacts live: a local directory by default, any fsspec URL in production.

:class:`ModelStore` is the plain store (no Dagster); ``resources/model_store.py`` wraps it as a resource.

An artifact is a ``state_dict`` (a flat mapping of names to tensors) plus a small JSON manifest, saved
under ``<root>/<model_name>/<version>/``. Loading always uses ``torch.load(weights_only=True)`` (no
pickled code is ever executed) and ``map_location`` so a GPU-trained model loads on a CPU machine.
"""


import hashlib
import io
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec

from rec_orchestration.confinement import no_parent_steps, plain_name, within
from rec_orchestration.failpoints import failpoint

STATE_FILE = "state_dict.pt"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"


def artifact_version(data_version: str, params: Mapping[str, Any], code_version: str) -> str:
    """Version of an artifact: a short hash of what produced it (data, parameters, code)."""
    payload = json.dumps({"data": data_version, "params": params, "code": code_version}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ModelStore:
    """Versioned model artifacts under ``root_url`` (a path or an fsspec URL such as ``s3://bucket/models``)."""

    def __init__(self, root_url: str) -> None:
        no_parent_steps(root_url, "model store root")
        self.root_url = root_url.rstrip("/")
        protocol = fsspec.core.split_protocol(self.root_url)[0]
        # A local store also checks that symlinks inside it do not lead out of it.
        self._local_root = Path(fsspec.core.strip_protocol(self.root_url)) if protocol in (None, "file") else None

    def _root(self) -> str:
        return self.root_url

    def _path(self, model_name: str, version: str, filename: str) -> str:
        """The URL of one artifact file; model names, versions and file names are plain names."""
        parts = [plain_name(model_name, "model name"), plain_name(version, "model version")]
        if filename:
            parts.append(plain_name(filename, "artifact file name"))
        url = "/".join([self._root(), *parts, *([] if filename else [""])])
        if self._local_root is not None:
            within(self._local_root, Path(fsspec.core.strip_protocol(url)), "model artifact")
        return url

    def exists(self, model_name: str, version: str) -> bool:
        """A complete artifact: its manifest (written last) is there and reads back."""
        fs, path = fsspec.core.url_to_fs(self._path(model_name, version, MANIFEST_FILE))
        if not fs.exists(path):
            return False
        try:
            self.manifest(model_name, version)
        except ValueError:
            return False
        return True

    def location(self, model_name: str, version: str) -> str:
        return self._path(model_name, version, "")

    def save(self, model_name: str, version: str, state_dict: Mapping[str, Any],
             manifest: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> str:
        """Write the state dict and any extra ``files`` (plots), then the manifest: the manifest's presence
        marks a complete artifact, so a crash mid-save leaves an artifact that ``exists`` calls absent.
        A version is written once: saving a version that exists is a no-op (same inputs, same model)."""
        import torch

        if self.exists(model_name, version):
            return self.location(model_name, version)
        buffer = io.BytesIO()
        torch.save(dict(state_dict), buffer)
        self._write(self._path(model_name, version, STATE_FILE), buffer.getvalue())
        for filename, payload in (files or {}).items():
            self._write(self._path(model_name, version, filename), payload)
        failpoint("model_store.before_manifest")
        body = json.dumps({"model_name": model_name, "version": version, **manifest}, indent=2, default=str)
        self._write(self._path(model_name, version, MANIFEST_FILE), body.encode())
        return self.location(model_name, version)

    def _write(self, url: str, payload: bytes) -> None:
        """Write beside the target, then rename over it (atomic on a local disk): a reader or a crash
        never sees half a file."""
        fs, path = fsspec.core.url_to_fs(url)
        fs.makedirs(fs._parent(path), exist_ok=True)
        partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
        with fs.open(partial, "wb") as fh:
            fh.write(payload)
        fs.mv(partial, path)

    def _read(self, url: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(url)
        with fs.open(path, "rb") as fh:
            return fh.read()

    def manifest(self, model_name: str, version: str) -> dict[str, Any]:
        return json.loads(self._read(self._path(model_name, version, MANIFEST_FILE)))

    def has_file(self, model_name: str, version: str, filename: str) -> bool:
        fs, path = fsspec.core.url_to_fs(self._path(model_name, version, filename))
        return fs.exists(path)

    def read_file(self, model_name: str, version: str, filename: str) -> bytes:
        return self._read(self._path(model_name, version, filename))

    def set_latest(self, model_name: str, version: str) -> None:
        """Point ``<model_name>/LATEST`` at ``version`` (what evaluation and publishing read)."""
        if not self.exists(model_name, version):
            raise ValueError(f"no complete artifact {model_name} {version}")
        self._write(f"{self._root()}/{plain_name(model_name, 'model name')}/{LATEST_FILE}", version.encode())

    def latest(self, model_name: str) -> str | None:
        url = f"{self._root()}/{plain_name(model_name, 'model name')}/{LATEST_FILE}"
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            return None
        return plain_name(self._read(url).decode().strip(), f"the version in {url}")

    def load(self, model_name: str, version: str, map_location: str = "cpu") -> tuple[dict[str, Any], dict]:
        import torch

        payload = self._read(self._path(model_name, version, STATE_FILE))
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        return state, self.manifest(model_name, version)
