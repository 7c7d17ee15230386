# medstage node: python -m server on the embedded (in-process) backend.
FROM python:3.11-slim

# ffmpeg for recording repair/inspection (issue 4); curl for the health check.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 medstage
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY media ./media
COPY rooms ./rooms
COPY recording ./recording
RUN pip install --no-cache-dir .

USER medstage
ENV MEDSTAGE_HOST=0.0.0.0 \
    MEDSTAGE_PORT=8080 \
    MEDSTAGE_LOG_FORMAT=json
# HTTP + signalling WebSocket; UDP for media (ICE host candidates use ephemeral ports: restrict them
# to this range with --sysctl net.ipv4.ip_local_port_range="50000 50199").
EXPOSE 8080/tcp
EXPOSE 50000-50199/udp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${MEDSTAGE_PORT}/healthz" || exit 1
STOPSIGNAL SIGTERM
CMD ["python", "-m", "server"]
