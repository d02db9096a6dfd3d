# The API image: FastAPI + SQLAlchemy + the Celery client. No torch: the API never trains.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY migrations ./migrations
COPY worker ./worker
COPY trainer ./trainer
COPY juice ./juice
# Install the service without its trainer dependencies (torch, transformers, ...).
RUN pip install --no-deps -e . && \
    pip install "fastapi>=0.115" "uvicorn>=0.30" "python-multipart>=0.0.9" "pydantic>=2.7" \
      "pydantic-settings>=2.3" "sqlalchemy>=2.0.30" "alembic>=1.13" "psycopg[binary]>=3.1" \
      "celery[redis]>=5.4" "kombu>=5.4" "redis>=5" "fsspec>=2024.6" "s3fs" "gcsfs" \
      "jinja2>=3.1" "plotly>=5.20"  # the dashboard: page templates, Plotly's JS bundle
EXPOSE 8000
CMD ["sh", "-c", "juice db upgrade && juice api --host 0.0.0.0 --port 8000"]
