# syntax=docker/dockerfile:1
# One image for the three Python services and the one-shot migrate job; the command picks which
# (sms-receiver, sms-validator, sms-admin, or deploy/bootstrap.py). See docs/deployment.md.
#
# BASE is Debian 12: a normal machine pulls the official image; a machine without a registry
# builds its own with debootstrap and tags it with the same name (docs/deployment.md).
ARG BASE=debian:bookworm-slim

# ---------------------------------------------------------------- build: the venv
FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY sms_gateway ./sms_gateway
COPY services ./services
COPY checks ./checks
# A TLS-intercepting proxy's CA can be given as a build secret (`--secret id=extra_ca,src=FILE`);
# without it pip trusts Debian's bundle only. Exact versions come from constraints.txt.
RUN --mount=type=secret,id=extra_ca,required=false \
    bundle=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then \
      cat "$bundle" /run/secrets/extra_ca > /tmp/ca.pem; bundle=/tmp/ca.pem; \
    fi; \
    PIP_CERT="$bundle" /opt/venv/bin/pip install --no-cache-dir --no-compile \
      -c constraints.txt . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && rm -f /tmp/ca.pem

# ---------------------------------------------------------------- runtime
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 smsgw \
 && useradd --system --uid 10001 --gid smsgw --home-dir /app --shell /usr/sbin/nologin smsgw \
 && install -d -o smsgw -g smsgw -m 0750 /var/lib/smsgw/pgbouncer-auth
COPY --from=build /opt/venv /opt/venv
# The migrations are not part of the wheel: the migrate job reads them from here.
COPY db/init /app/db/init
COPY deploy/bootstrap.py deploy/docker/ready.py /app/deploy/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SMSGW_HTTP_HOST=0.0.0.0 \
    SMSGW_LOG_FORMAT=json
WORKDIR /app
USER smsgw:smsgw
# uvicorn stops gracefully on SIGTERM (SPEC §6.5: the validator within 30 s).
STOPSIGNAL SIGTERM
CMD ["sms-receiver"]
