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
# A TLS-intercepting proxy's CA can be given as the build secret extra_ca (compose:
# SMSGW_EXTRA_CA; docker build: `--secret id=extra_ca,src=FILE`); without it pip trusts Debian's
# bundle only. Exact versions come from constraints.txt.
# First the dependencies alone, read from pyproject.toml: this layer is rebuilt only when they
# or their pins change, not on every change of the code.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=extra_ca,required=false \
    bundle=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then \
      cat "$bundle" /run/secrets/extra_ca > /tmp/ca.pem; bundle=/tmp/ca.pem; \
    fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && PIP_CERT="$bundle" /opt/venv/bin/pip install --no-cache-dir --no-compile \
      --disable-pip-version-check -c constraints.txt -r /tmp/requirements.txt "setuptools>=69" \
 && rm -f /tmp/ca.pem /tmp/requirements.txt
# Then the project itself, offline: no index, no build isolation (setuptools is in the venv).
COPY README.md ./
COPY sms_gateway ./sms_gateway
COPY services ./services
COPY checks ./checks
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile --disable-pip-version-check \
      --no-index --no-deps --no-build-isolation . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------- runtime
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 smsgw \
 && useradd --system --uid 10001 --gid smsgw --home-dir /app --shell /usr/sbin/nologin smsgw \
 && install -d -o smsgw -g smsgw -m 0750 /var/lib/smsgw/pgbouncer-auth /var/lib/smsgw/archive
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
