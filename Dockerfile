# The operator image: the `hpo` package alone, without TensorFlow and without
# hpo_trainer (which depends on hpo, never the reverse; pyproject finds the
# packages that are present, so only operator/ is copied).
# Build from the repository root: docker build -t IMAGE .  (or: make images)
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
# The dependencies first, pinned as in pyproject.toml (images/requirements.py generates
# the file): this layer is rebuilt only when they change, not on every change of code.
COPY images/requirements-operator.txt images/prune.sh ./
RUN pip install --no-cache-dir --prefix=/install -r requirements-operator.txt \
 && sh prune.sh /install
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --no-deps --prefix=/app .

FROM python:3.11.11-slim-bookworm
RUN useradd --uid 1000 --create-home hpo
# Two layers: a change of code replaces the small second one only.
COPY --from=build /install /usr/local
COPY --from=build /app /usr/local
USER 1000
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/matplotlib
# 8080: the liveness endpoint (/healthz); 9090: Prometheus metrics (--metrics-port).
EXPOSE 8080 9090
ENTRYPOINT ["hpo"]
CMD ["operator", "--log-format", "json"]
