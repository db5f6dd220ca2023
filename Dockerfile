# The operator image: the `hpo` package without TensorFlow.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer-image/hpo_trainer ./trainer-image/hpo_trainer
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.11-slim-bookworm
COPY --from=build /install /usr/local
RUN useradd --uid 1000 --create-home hpo
USER 1000
ENV PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8080
ENTRYPOINT ["hpo"]
CMD ["operator", "--log-format", "json"]
