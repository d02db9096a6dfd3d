# The API image: FastAPI + SQLAlchemy + the Celery client, run as a non-root user. No torch: the API
# never trains. It also runs the one-shot `migrate` service of docker-compose.yml (juice db upgrade).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
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
# Install the service without its trainer dependencies (torch, transformers, ...).
RUN pip install --no-deps -e . && \
    pip install "fastapi>=0.115" "uvicorn>=0.30" "python-multipart>=0.0.9" "pydantic>=2.7" \
      "pydantic-settings>=2.3" "sqlalchemy>=2.0.30" "alembic>=1.13" "psycopg[binary]>=3.1" \
      "celery[redis]>=5.4" "kombu>=5.4" "redis>=5" "fsspec>=2024.6" "httpx>=0.27" "psutil>=5.9" "s3fs" "gcsfs" \
      "jinja2>=3.1" "plotly>=5.20"  # the dashboard: page templates, Plotly's JS bundle
USER juice
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["juice", "api", "--host", "0.0.0.0", "--port", "8000"]
