# syntax=docker/dockerfile:1.7
# The image of the code location on Kubernetes (deploy/helm/values.yaml, docs/deployment.md): the gRPC
# server of rec_orchestration.definitions, and the image every run and step pod runs (REC_EXECUTOR=k8s).
#
#   docker build --build-context wheels=/opt/wheels -t registry.example.com/rec-orchestration:$(git rev-parse --short HEAD) .
#
# What it installs: requirements.lock as it stands (every version hash-checked, --no-deps, as `make env`
# does), plus deploy/requirements-k8s.lock (the `k8s` extra, dagster-k8s, and s3fs for an s3:// model store,
# hash-pinned the same way by deploy/lock-k8s.sh), then the project itself, editable, so that its
# PROJECT_ROOT is /opt/rec/app, where the dbt project and the manifest built below are.
#
# torch: the lock pins torch==2.13.0+cpu, the CPU wheel in the project machines' wheel folder (/opt/wheels,
# the Makefile's WHEELS); the lock's hash is that file's. Pass that folder as the `wheels` build context, as
# above. Without it the `torch-cpu-download` stage fetches the same version from PyTorch's CPU index and the
# lock's hash decides whether it is the same file (not verified here: that index was not reachable when this
# was written).
# TORCH_VARIANT=cuda builds the image for the GPU step (LightGCN, see REC_K8S_GPU_IMAGE in
# rec_orchestration/deployment.py): everything from the locks except torch, then torch==2.13.0 from PyPI,
# the CUDA build with its nvidia-* libraries (several GB), resolved with the lock's versions held but NOT
# hash-checked: the lock has no CUDA torch. The default (cpu) image runs LightGCN on the CPU.

ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VARIANT=cpu

FROM ${PYTHON_IMAGE} AS torch-cpu-download
ARG TORCH_VARIANT
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN mkdir -p /out && if [ "$TORCH_VARIANT" = cpu ]; then \
      pip download --no-deps --only-binary=:all: --dest /out --index-url "$TORCH_INDEX_URL" "torch==2.13.0+cpu"; \
    fi

# The wheel folder pip finds torch in; `--build-context wheels=DIR` replaces this stage with DIR.
FROM scratch AS wheels
COPY --from=torch-cpu-download /out/ /

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT
# lightfm-next has no wheel for this platform: its sdist is compiled here, not in the runtime image.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /opt/rec/app
COPY requirements.lock ./
COPY deploy/requirements-k8s.lock ./deploy/
COPY --from=wheels / /wheels/
RUN set -eux; \
    case "$TORCH_VARIANT" in \
      cpu) cp requirements.lock /tmp/base.lock ;; \
      cuda) awk '/^[^ #]/ {skip = ($1 ~ /^torch==/)} !skip' requirements.lock >/tmp/base.lock ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install --no-deps --require-hashes --find-links /wheels -r /tmp/base.lock -r deploy/requirements-k8s.lock; \
    if [ "$TORCH_VARIANT" = cuda ]; then \
      awk '/^[A-Za-z0-9]/ && /==/ {print $1}' requirements.lock deploy/requirements-k8s.lock \
        | grep -v '^torch==' >/tmp/constraints.txt; \
      pip install --constraint /tmp/constraints.txt "torch==2.13.0"; \
    fi
COPY pyproject.toml README.md ./
COPY rec_orchestration ./rec_orchestration
COPY dbt_project ./dbt_project
# setuptools is in the lock: no unpinned build environment for the project itself.
RUN pip install --no-deps --no-build-isolation -e . && pip check
# The dbt manifest Dagster loads (dbt_project/target/manifest.json), as `make manifest` builds it: `rec
# dbt-parse` parses without a database.
RUN rec dbt-parse && test -s dbt_project/target/manifest.json

FROM ${PYTHON_IMAGE} AS runtime
# LightFM's OpenMP kernel needs libgomp (torch brings its own).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 rec \
    && useradd --system --uid 10001 --gid rec --create-home --home-dir /home/rec --shell /usr/sbin/nologin rec
# DAGSTER_HOME: where the Helm chart mounts the instance's dagster.yaml (its global.dagsterHome default) and
# Dagster writes local files; REC_HOME: the project's local state (nothing of it needs to outlive a pod
# when REC_DATABASE_URL, REC_MODEL_STORE_DIR, REC_LANDING_DIR and REC_BACKUP_DIR point elsewhere). HOME and
# NUMBA_CACHE_DIR: writable caches (numba's cache=True kernels cannot cache beside the root-owned code,
# matplotlib wants a config directory).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home REC_HOME=/opt/rec/state \
    HOME=/home/rec NUMBA_CACHE_DIR=/home/rec/.cache/numba
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/rec/app /opt/rec/app
# The code stays root-owned; dbt writes its target/ and logs/ at run time.
RUN mkdir -p /opt/dagster/dagster_home /opt/rec/state \
    && chown -R rec:rec /opt/dagster/dagster_home /opt/rec/state /opt/rec/app/dbt_project
WORKDIR /opt/rec/app
USER 10001:10001
EXPOSE 3030
# No ENTRYPOINT: the chart's user deployment runs `dagster api grpc -h 0.0.0.0 -p 3030 -m
# rec_orchestration.definitions` as the container's args, and run and step pods their own dagster commands.
CMD ["dagster", "api", "grpc", "-m", "rec_orchestration.definitions", "-h", "0.0.0.0", "-p", "3030"]
