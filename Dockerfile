# Lexicon bot + its local GPU worker. Build: docker build -t lexicon .
# Run:   docker run --gpus all -e DISCORD_TOKEN=… -v lexicon-data:/data lexicon
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LEXICON_DATA_DIR=/data

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 lexicon \
 && mkdir /data && chown lexicon:lexicon /data
WORKDIR /app
COPY --chown=lexicon:lexicon . /app

# The same install steps as README.md's "Install by hand".
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN python -m pip install --upgrade pip
RUN python -m pip install torch==2.13.0
RUN python -m pip install .

USER lexicon
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-m", "bot.health"]
ENTRYPOINT ["lexicon"]
CMD ["run"]
