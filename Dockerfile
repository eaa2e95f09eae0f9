# cbt-agent container image: the per-node daemon /usr/bin/cbt-agent and its client /usr/bin/cbtctl.
#
# Build it with scripts/build-image (podman, no registry needed: it makes the two Debian base
# images below itself with debootstrap). With docker or podman and registry access, plain
#   docker build --build-arg VERSION=0.1.0 -t cbt-agent:0.1.0 .
# works too, from the official debian:bookworm and debian:bookworm-slim.

# Shared libraries the binaries load, as Debian 12 packages: exactly the packages that hold the
# binaries' DT_NEEDED libraries (libssl3, libc-ares2, libre2-9, zlib1g ... come in as their
# dependencies). The build stage derives that set from the binaries it just linked and fails the
# build when this list differs from it (scripts/image/runtime-packages); liburing2 is the ublk
# backend's. The runtime stage then runs both binaries.
ARG RUNTIME_PACKAGES="libc6 libgcc-s1 libstdc++6 libabsl20220623 libprotobuf32 libgrpc29 libgrpc++1.51 liburing2"
# Set by scripts/build-image from project(... VERSION ...) in CMakeLists.txt.
ARG VERSION=0.0.0-dev

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm AS build
# Toolchain and -dev packages first, in their own layer: it is reused until install-deps changes.
COPY scripts/install-deps /src/scripts/install-deps
RUN /src/scripts/install-deps build-only && rm -rf /var/lib/apt/lists/*

# Declared here, not earlier, so that changing the list keeps the layer above.
ARG RUNTIME_PACKAGES
COPY . /src
# Only the two shipped programs: no tests, no benchmarks. Warnings are CI's business (make test
# builds everything with -Werror); a release build must not fail on an -O3-only false positive.
RUN cmake -S /src -B /build -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DCBT_BUILD_TESTS=OFF -DCBT_BUILD_BENCH=OFF -DCBT_WERROR=OFF \
        -DCMAKE_RUNTIME_OUTPUT_DIRECTORY=/build/bin \
 && ninja -C /build cbt-agent cbtctl \
 && mkdir -p /out \
 && cp /build/bin/cbt-agent /build/bin/cbtctl /out/ \
 && strip --strip-all /out/cbt-agent /out/cbtctl \
 && VERBOSE=1 /src/scripts/image/runtime-packages --check "$RUNTIME_PACKAGES" /out/cbt-agent /out/cbtctl

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
ARG RUNTIME_PACKAGES
# Libraries only: no compiler, no headers, no recommends. The unprivileged user "cbt" (group
# "cbt") is for running cbtctl alone, e.g. `podman exec --user cbt ... cbtctl capabilities`
# against an agent started with --socket_group=cbt; the agent itself runs as root (see below).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $RUNTIME_PACKAGES \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
 && useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cbt \
 && install -d -m 0755 /run/cbt-agent \
 && install -d -m 0700 /var/lib/cbt-agent

COPY --from=build /out/cbt-agent /out/cbtctl /usr/bin/

# Prove the library list: both programs must load and run here, in the runtime stage.
ARG VERSION
RUN if ldd /usr/bin/cbt-agent /usr/bin/cbtctl | grep 'not found'; then exit 1; fi \
 && test "$(/usr/bin/cbt-agent --version)" = "cbt-agent ${VERSION}" \
 && /usr/bin/cbtctl --help >/dev/null

# scripts/build-image passes the repository's origin URL (or CBT_IMAGE_SOURCE) and
# CBT_IMAGE_LICENSES; the tree has no licence file yet, hence SPDX's "NOASSERTION".
ARG SOURCE="unknown"
ARG LICENSES="NOASSERTION"
LABEL org.opencontainers.image.title="cbt-agent" \
      org.opencontainers.image.description="Per-node changed-block-tracking and snapshot agent (gRPC API) with the cbtctl client" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}"

# Why root, and why the pod must be privileged: the agent's work is the node's block devices.
# It issues block-device ioctls on the host's disks; opens the blksnap control device
# (/dev/blksnap-control, /dev/veeamblksnap) to attach change trackers and take snapshots; drives
# the ublk control device (/dev/ublk-control) and serves ublk queues through io_uring; and
# creates and opens the device nodes those produce (/dev/ublkcN, /dev/ublkbN, snapshot images).
# That takes CAP_SYS_ADMIN and raw access to the host's /dev, which no unprivileged USER can be
# given, so there is no USER line: the image runs as root, and the deployment (deploy/helm) runs
# it privileged with the host's /dev mounted. The "cbt" user above exists only for cbtctl.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/cbt-agent"]
CMD ["--listen=unix:/run/cbt-agent/agent.sock", "--state_dir=/var/lib/cbt-agent", "--health_listen=0.0.0.0:9811"]
