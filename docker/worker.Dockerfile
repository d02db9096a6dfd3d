# The GPU worker image: CUDA runtime + torch + transformers/accelerate/peft + the worker.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip && \
    rm -rf /var/lib/apt/lists/* && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# The CUDA build of torch comes from PyTorch's index inside this image only.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124
COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY migrations ./migrations
COPY worker ./worker
COPY trainer ./trainer
COPY juice ./juice
RUN pip install -e . s3fs gcsfs
CMD ["juice", "worker", "--concurrency", "1"]
