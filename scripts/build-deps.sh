#!/usr/bin/env bash
# What building sluice needs from Debian: a C toolchain, and pkg-config + OpenSSL headers for
# librdkafka (built from source by rdkafka-sys; Kafka mode's TLS and SASL SCRAM). Idempotent.
set -euo pipefail
{ command -v cc && command -v pkg-config && dpkg -s libssl-dev; } >/dev/null 2>&1 && exit 0
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config libssl-dev >/dev/null
