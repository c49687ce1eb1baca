"""A box's trust in its devbox's interception CA, set up at `devbox create` by one exec as
root with the CA certificate (public) on stdin:

- /etc/devbox/ca-bundle.pem: the image's system CAs (the first bundle of the usual places:
  Debian/Ubuntu/Alpine, Fedora/RHEL, SUSE) plus the devbox CA. The box's environment points
  SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, GIT_SSL_CAINFO,
  PIP_CERT and AWS_CA_BUNDLE at it (services/box_env.py).
- On a Debian-style trust store, the CA as update-ca-certificates would leave it: in
  /usr/local/share/ca-certificates (so a later run of the tool keeps it), linked and hashed in
  /etc/ssl/certs and appended to ca-certificates.crt, for clients that read the system store
  and none of the variables. The tool itself is not run: it rehashes every CA (~2 s).

On other images only the bundle and the variables are set up. The image needs a POSIX sh.
Installing again replaces a devbox CA installed before (a box made from a snapshot of
another devbox carries that one's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devbox_cli.errors import DevboxRuntimeError

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

BUNDLE = "/etc/devbox/ca-bundle.pem"
# the line before the devbox CA in a bundle (PEM readers skip text outside the armour)
MARK = "# devbox interception CA"
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
_SCRIPT = f"""set -eu
umask 022
ca=$(cat)
mark='{MARK}'
certs=/etc/ssl/certs
debian=
[ -d /usr/local/share/ca-certificates ] && [ -f "$certs/ca-certificates.crt" ] && debian=1
if [ -n "$debian" ]; then
  # a box from a snapshot of another devbox: that one's CA goes first
  sed -i "/^$mark\\$/,/-----END CERTIFICATE-----/d" "$certs/ca-certificates.crt"
  find "$certs" -maxdepth 1 -lname devbox.pem -exec rm -f {{}} +
fi
mkdir -p /etc/devbox
tmp={BUNDLE}.$$
: > "$tmp"
for f in {" ".join(SYSTEM_BUNDLES)}; do
  if [ -f "$f" ]; then cat "$f" >> "$tmp"; break; fi
done
printf '%s\\n%s\\n' "$mark" "$ca" >> "$tmp"
mv -f "$tmp" {BUNDLE}
if [ -n "$debian" ]; then
  printf '%s\\n' "$ca" > /usr/local/share/ca-certificates/devbox.crt
  ln -sf /usr/local/share/ca-certificates/devbox.crt "$certs/devbox.pem"
  if command -v openssl >/dev/null 2>&1; then
    h=$(openssl x509 -hash -noout -in "$certs/devbox.pem") && i=0
    while [ -e "$certs/$h.$i" ]; do i=$((i + 1)); done
    ln -s devbox.pem "$certs/$h.$i"
  fi
  printf '%s\\n%s\\n' "$mark" "$ca" >> "$certs/ca-certificates.crt"
fi
echo trusted
"""


def install_ca(docker: DockerBackend, box: str, cert_pem: str) -> None:
    """Make box container `box` trust `cert_pem` (see the module docstring)."""
    code, output = docker.exec_with_stdin(
        box, ["/bin/sh", "-c", _SCRIPT], cert_pem.encode(), user="0", timeout=30.0
    )
    if code != 0 or "trusted" not in output:
        last = (output.strip().splitlines() or ["no output"])[-1][:200]
        raise DevboxRuntimeError(
            f"could not install the devbox's CA in the box: {last}",
            "a host gateway needs an image with /bin/sh; use the default image, or bind "
            "only gateways without --host",
        )
