# The GPU worker image: torch + transformers/accelerate/peft + the worker, run as a non-root user. It
# also runs `juice inference` (docker-compose.yml's inference service), with its own health check there.
#
# torch 2.13.0 on PyPI is the CUDA 13.0 build (its metadata pins cuda-toolkit 13.0.3 and
# nvidia-cudnn-cu13 9.20): the CUDA runtime, cuBLAS, cuDNN and NCCL arrive as pip packages, so the
# image needs no CUDA base image, only the host's NVIDIA driver through the NVIDIA Container Toolkit
# (CUDA 13.0 needs an R580 or newer driver). PyTorch's own cu124 index, which this file used to
# name, does not carry 2.13 (CUDA 12.4 builds stopped with torch 2.6).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install torch==2.13.0
RUN useradd --create-home --uid 10001 juice && mkdir -p /data && chown juice:juice /data
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY migrations ./migrations
COPY worker ./worker
COPY trainer ./trainer
COPY inference ./inference
COPY graders ./graders
COPY juice ./juice
RUN pip install -e ".[tracking]" s3fs gcsfs
# Python graders run on their own interpreter (graders/sandbox.py): one the sandbox's user `nobody` can
# execute, outside the service's files, with the libraries OpenAI's python graders offer. The sandbox
# also needs a network namespace, i.e. user namespaces in a container run as non-root: under a runtime
# that forbids unshare (Docker's default seccomp profile without CAP_SYS_ADMIN), python graders are
# refused with a 400 naming the reason, never run unconfined (docs/deployment.md).
RUN python -m venv /opt/juice-grader-venv && \
    /opt/juice-grader-venv/bin/pip install numpy scipy sympy rapidfuzz && \
    chmod -R a+rX /opt/juice-grader-venv
ENV JUICE_GRADER_PYTHON=/opt/juice-grader-venv/bin/python
USER juice
# The Celery node of this container answers a ping (`juice worker` is PID 1 here: its node name is
# juice@<hostname>-1); a wedged or disconnected worker does not.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
  CMD celery -A worker.celery_app inspect ping -d "juice@${HOSTNAME}-1" --timeout 10 || exit 1
CMD ["juice", "worker", "--concurrency", "1"]
