"""Where trained model artifacts live: a local directory by default, any fsspec URL in production.

An artifact is a ``state_dict`` (a flat mapping of names to tensors) plus a small JSON manifest, saved
under ``<root>/<model_name>/<version>/``. Loading always uses ``torch.load(weights_only=True)`` (no
pickled code is ever executed) and ``map_location`` so a GPU-trained model loads on a CPU machine.
"""


import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
import fsspec
from pydantic import Field

from rec_orchestration import settings

STATE_FILE = "state_dict.pt"
MANIFEST_FILE = "manifest.json"


def artifact_version(data_version: str, params: Mapping[str, Any], code_version: str) -> str:
    """Version of an artifact: a short hash of what produced it (data, parameters, code)."""
    payload = json.dumps({"data": data_version, "params": params, "code": code_version}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ModelStoreResource(dg.ConfigurableResource):
    """Versioned model artifacts under ``root_url`` (a path or an fsspec URL such as ``s3://bucket/models``)."""

    root_url: str | None = Field(default=None, description="Defaults to <REC_HOME>/model_store.")

    def _root(self) -> str:
        return (self.root_url or str(settings.model_store_dir())).rstrip("/")

    def _path(self, model_name: str, version: str, filename: str) -> str:
        return f"{self._root()}/{model_name}/{version}/{filename}"

    def exists(self, model_name: str, version: str) -> bool:
        fs, path = fsspec.core.url_to_fs(self._path(model_name, version, MANIFEST_FILE))
        return fs.exists(path)

    def save(self, model_name: str, version: str, state_dict: Mapping[str, Any],
             manifest: Mapping[str, Any]) -> str:
        """Write the state dict, then the manifest (the manifest's presence marks a complete artifact)."""
        import torch

        buffer = io.BytesIO()
        torch.save(dict(state_dict), buffer)
        fs, state_path = fsspec.core.url_to_fs(self._path(model_name, version, STATE_FILE))
        fs.makedirs(fs._parent(state_path), exist_ok=True)
        with fs.open(state_path, "wb") as fh:
            fh.write(buffer.getvalue())
        fs_m, manifest_path = fsspec.core.url_to_fs(self._path(model_name, version, MANIFEST_FILE))
        with fs_m.open(manifest_path, "w") as fh:
            json.dump({"model_name": model_name, "version": version, **manifest}, fh, indent=2, default=str)
        return self._path(model_name, version, "")

    def load(self, model_name: str, version: str, map_location: str = "cpu") -> tuple[dict[str, Any], dict]:
        import torch

        fs, state_path = fsspec.core.url_to_fs(self._path(model_name, version, STATE_FILE))
        with fs.open(state_path, "rb") as fh:
            state = torch.load(io.BytesIO(fh.read()), map_location=map_location, weights_only=True)
        fs_m, manifest_path = fsspec.core.url_to_fs(self._path(model_name, version, MANIFEST_FILE))
        with fs_m.open(manifest_path, "r") as fh:
            manifest = json.load(fh)
        return state, manifest
