# The collapsewatch image: one image for api, worker, beat and migrate
# (docker-compose.yml picks the subcommand).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COLLAPSEWATCH_DATA_DIR=/data

RUN useradd --create-home --uid 10001 collapsewatch \
    && mkdir -p /data \
    && chown collapsewatch /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY metrics ./metrics
COPY collectors ./collectors
COPY service ./service
COPY migrations ./migrations
RUN pip install '.[postgres,redis,otel]'

USER collapsewatch
EXPOSE 8000
ENTRYPOINT ["collapsewatch"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
