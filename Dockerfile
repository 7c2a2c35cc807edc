# n8n-gate: a slim, non-root image that migrates the database, then serves.
#   docker build -t n8n-gate .
#   docker run -e DATABASE_URL=postgresql://... -e N8N_BASE_URL=http://n8n:5678 -p 8080:8080 n8n-gate
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/app.txt ./requirements/app.txt
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --require-hashes -r requirements/app.txt
COPY app ./app
# The migrations go into the package (app/alembic in the installed wheel): nothing is read from
# the working directory at run time.
COPY alembic ./alembic
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gate \
    && useradd --system --uid 10001 --gid gate --home-dir /srv --no-create-home gate
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
USER gate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# `exec` replaces the shell, so SIGTERM from `docker stop` reaches the server.
CMD ["sh", "-c", "n8n-gate migrate && exec n8n-gate serve --host 0.0.0.0 --port 8080 --workers ${GATE_WORKERS:-2}"]
