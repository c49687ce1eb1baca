# The devbox base on a machine that can pull: Debian's small official image of the suite,
# with the same packages the offline path (debootstrap) installs.
ARG SOURCE=debian:bookworm-slim
FROM ${SOURCE}
COPY base-packages.txt /tmp/base-packages.txt
RUN apt-get update -qq \
 && xargs -a /tmp/base-packages.txt apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/base-packages.txt
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
