# The fedlearn image: one image for every part (API, trainers, Celery worker and beat); the
# command picks the part. docker-compose.yml runs the same commands `fedlearn up` runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# What `pip install .` needs: the package metadata and license, the Python packages, and the
# browser client that ships as data files (the API serves it).
COPY pyproject.toml README.md LICENSE ./
COPY fedlearn ./fedlearn
COPY workers ./workers
COPY client_js/src ./client_js/src
COPY client_js/demo ./client_js/demo
COPY client_js/types ./client_js/types
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin fedlearn \
    && mkdir -p /data \
    && chown fedlearn /data

# State (the event log, the beat schedule, Prometheus' multiprocess files) lives in /data,
# a volume; nothing is written next to the code.
USER fedlearn
WORKDIR /data
ENV FEDLEARN_DATA_DIR=/data
EXPOSE 8000
CMD ["fedlearn", "api", "--host", "0.0.0.0", "--port", "8000"]
