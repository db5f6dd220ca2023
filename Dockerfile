# The operator image: the `hpo` package alone, without TensorFlow and without
# hpo_trainer (which depends on hpo, never the reverse; pyproject finds the
# packages that are present, so only operator/ is copied).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.11-slim-bookworm
COPY --from=build /install /usr/local
RUN useradd --uid 1000 --create-home hpo
USER 1000
ENV PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8080
ENTRYPOINT ["hpo"]
CMD ["operator", "--log-format", "json"]
