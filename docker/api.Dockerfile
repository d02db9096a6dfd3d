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
# Install the service without its trainer dependencies (torch, transformers, ...); jinja2 and plotly are
# the dashboard's (page templates, Plotly's JS bundle), rapidfuzz, nltk and rouge-score the graders'
# (text_similarity's metrics, for /v1/fine_tuning/alpha/graders/run).
RUN pip install --no-deps -e . && \
    pip install "fastapi>=0.115" "uvicorn>=0.30" "python-multipart>=0.0.9" "pydantic>=2.7" \
      "pydantic-settings>=2.3" "sqlalchemy>=2.0.30" "alembic>=1.13" "psycopg[binary]>=3.1" \
      "celery[redis]>=5.4" "kombu>=5.4" "redis>=5" "fsspec>=2024.6" "httpx>=0.27" "psutil>=5.9" "s3fs" "gcsfs" \
      "jinja2>=3.1" "plotly>=5.20" "rapidfuzz>=3.9" "nltk>=3.9" "rouge-score>=0.1.2"
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
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["juice", "api", "--host", "0.0.0.0", "--port", "8000"]
