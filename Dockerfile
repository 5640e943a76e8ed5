FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY producer ./producer
COPY worker ./worker
RUN pip install --no-cache-dir '.[flower,api,s3,mlflow]' \
    && useradd --create-home predictq \
    && mkdir -p /data/artifacts && chown -R predictq /data
USER predictq
ENV PREDICTQ_ARTIFACT_DIR=/data/artifacts
ENTRYPOINT ["predictq"]
CMD ["--help"]
