"""The model store as a Dagster resource: where the model assets keep their artifacts."""

import dagster as dg
from pydantic import Field

from rec_orchestration import settings
from rec_orchestration.ml.artifacts import ModelStore


class ModelStoreResource(dg.ConfigurableResource):
    """Versioned model artifacts under ``root_url`` (a path or an fsspec URL such as ``s3://bucket/models``);
    see :class:`rec_orchestration.ml.artifacts.ModelStore`."""

    root_url: str | None = Field(default=None, description=(
        "Defaults to REC_MODEL_STORE_DIR (a path or URL) or <REC_HOME>/model_store."))

    def store(self) -> ModelStore:
        return ModelStore(self.root_url or settings.model_store_url())
