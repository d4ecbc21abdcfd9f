# One image for the api, the dispatcher and the Ray nodes (they must share Python, Ray and torch versions).
# The GPU worker needs a CUDA build of torch: build with --build-arg TORCH_SPEC="torch==2.13.0" from the
# CUDA wheel index (TORCH_INDEX); the default is the CPU build.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SWEEP_HOME=/var/lib/sweep-service

WORKDIR /app
# g++: Cautious, MARS, AdamH, Lion, Adam-mini and Sophia build their CPU kernels on first use (workers/optimizers/
# _cpu_kernels.py; without a compiler they fall back to slower torch ops).
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY sweep_service ./sweep_service
COPY workers ./workers
COPY db ./db
COPY api ./api
RUN pip install . && mkdir -p "${SWEEP_HOME}"
# The CPU kernels built into the image (~40 s here) instead of in every container's first trial. They are built
# with -march=native: a host whose CPU flags differ builds its own on first use (the name holds the flags), and a
# build that fails here only warns (torch ops instead).
RUN python -c "from workers.optimizers import _cpu_kernels; _cpu_kernels.load()"

EXPOSE 8000
CMD ["sweep-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
