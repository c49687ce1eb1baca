"""`devbox doctor`: checks of what devbox relies on, each a pass, a fail naming the fix, or
a skip saying what it needs: the engine answers, the images exist, the egress network is
sane, every devbox's proxy is configured and healthy, and the isolation probe (probe.py): a
throwaway devbox, always removed, must fail to reach the engine's host, outside DNS and the
internet around its proxy. Doctor only looks: it heals and repairs nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox_cli.engine import images
from devbox_cli.engine.topology import DEFAULT_EGRESS, remove_default_egress
from devbox_cli.engine.views import PROXY_URL
from devbox_cli.engine.wire import docker_host
from devbox_cli.errors import DevboxError
from devbox_cli.services import probe
from proxy.config import HEALTH_PATH

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.devboxes import DevboxService

PASS, FAIL, SKIP = "pass", "fail", "skip"
ICC = "com.docker.network.bridge.enable_icc"
PROBE_FIX = {
    "host": "a devbox must reach no address of its engine's host: run dockerd with its "
    "iptables rules on (the default), add no route or firewall rule that opens devbox "
    "networks, and recreate the devboxes (`devbox delete NAME`, `devbox create NAME`)",
    "dns": "outside DNS is a way out around the proxy: make sure devbox networks stay "
    "internal (`docker network inspect devbox-NAME-net`) and that no DNS forwarding or NAT "
    "rule on the host serves them",
    "internet": "a devbox must reach the internet only through its proxy: its network must "
    "be internal; check the engine's iptables rules and recreate the devboxes",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}


def failed(name: str, exc: DevboxError) -> Check:
    return Check(name, FAIL, exc.message, exc.hint)


class Doctor:
    def __init__(self, engine: Callable[[], DockerBackend], devboxes: DevboxService) -> None:
        self.engine = engine
        self.devboxes = devboxes

    def run(
        self, *, isolation: bool = True, progress: Callable[[str], None] | None = None
    ) -> DoctorReport:
        """Every check; with isolation=False the probe (a throwaway devbox) is skipped."""
        say = progress or (lambda _text: None)
        checks: list[Check] = []
        say("asking the engine")
        try:
            docker = self.engine()
            version = docker.version()
        except DevboxError as exc:
            checks.append(failed("engine", exc))
            later = ("images", "egress network", "devboxes", "isolation probe")
            checks += [Check(n, SKIP, "needs the engine") for n in later]
            return DoctorReport(tuple(checks))
        checks.append(
            Check(
                "engine",
                PASS,
                f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}, "
                f"{version.get('Os', '?')}/{version.get('Arch', '?')}) at {docker_host()}",
            )
        )
        have_images = self._images(docker, checks)
        egress_ok = self._egress(docker, checks)
        say("checking the devboxes' proxies")
        self._proxies(checks)
        if not isolation:
            checks.append(Check("isolation probe", SKIP, "not asked for (--no-probe)"))
        elif not (have_images and egress_ok):
            checks.append(Check("isolation probe", SKIP, "needs the images and the egress network"))
        else:
            say("probing isolation from a throwaway devbox")
            checks += self._isolation(docker)
        return DoctorReport(tuple(checks))

    def _images(self, docker: DockerBackend, checks: list[Check]) -> bool:
        ok = True
        for what, ref, variable in (
            ("proxy", images.proxy_image(), "DEVBOX_PROXY_IMAGE"),
            ("devbox", images.box_image(), "DEVBOX_IMAGE"),
        ):
            try:
                found = docker.image(ref)
            except DevboxError as exc:
                checks.append(failed(f"image ({what})", exc))
                ok = False
                continue
            if found is not None:
                checks.append(Check(f"image ({what})", PASS, f"{ref} is present"))
                continue
            ok = False
            fix = (
                f"build or load {ref}, or unset {variable}"
                if os.environ.get(variable)
                else "build the images with `devbox images build`"
            )
            checks.append(Check(f"image ({what})", FAIL, f"no image {ref} in the engine", fix))
        return ok

    def _egress(self, docker: DockerBackend, checks: list[Check]) -> bool:
        name = os.environ.get("DEVBOX_EGRESS_NETWORK") or DEFAULT_EGRESS
        what = "egress network"
        try:
            net = docker.network(name)
        except DevboxError as exc:
            checks.append(failed(what, exc))
            return False
        if net is None:
            if name == DEFAULT_EGRESS:
                detail = f"{name} does not exist yet; the next `devbox create` makes it"
                checks.append(Check(what, PASS, detail))
                return True
            fix = f"create it with `docker network create {name}`, or unset DEVBOX_EGRESS_NETWORK"
            checks.append(Check(what, FAIL, f"no network {name} (DEVBOX_EGRESS_NETWORK)", fix))
            return False
        problems, fixes = [], []
        remake = (
            f"remove it with `docker network rm {name}` once no devbox uses it; the next "
            "`devbox create` makes it again"
            if name == DEFAULT_EGRESS
            else "point DEVBOX_EGRESS_NETWORK at a bridge network that is not internal"
        )
        if net.get("Driver") != "bridge":
            problems.append(f"its driver is {net.get('Driver')}, not bridge")
        if net.get("Internal"):
            problems.append("it is internal, so proxies reach nothing through it")
        icc = (net.get("Options") or {}).get(ICC, "true")
        if name == DEFAULT_EGRESS and icc != "false":
            problems.append("inter-container traffic (icc) is on: proxies can reach each other")
        if problems:
            fixes.append(remake)
            checks.append(Check(what, FAIL, f"{name}: " + "; ".join(problems), " ".join(fixes)))
            return False
        note = "icc off" if icc == "false" else "icc on (a network of your own)"
        checks.append(Check(what, PASS, f"{name}: a bridge, not internal, {note}"))
        return True

    def _proxies(self, checks: list[Check]) -> None:
        try:
            boxes = self.devboxes.list()
        except DevboxError as exc:
            checks.append(failed("devboxes", exc))
            return
        if not boxes:
            checks.append(Check("devboxes", PASS, "none in this store"))
            return

        def check(name: str) -> Check:
            label = f"devbox {name}"
            try:
                box = self.devboxes.get(name, heal=False)
            except DevboxError as exc:
                return failed(label, exc)
            if box.status != "running":
                return Check(label, SKIP, f"box {box.status}: its proxy is not checked")
            if box.proxy.status == "running" and box.proxy.health == "ok":
                return Check(label, PASS, "proxy configured and healthy")
            state = box.proxy.health or box.proxy.status
            if box.proxy.configured is False:
                state += "; it started again since its last config push"
            return Check(
                label,
                FAIL,
                f"box running, proxy {box.proxy.status} ({state}): the devbox has no egress",
                f"run `devbox repair {name}` (or keep `devbox watch` running to heal it)",
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            checks += pool.map(check, [b.name for b in boxes])

    def _isolation(self, docker: DockerBackend) -> list[Check]:
        name = f"doctor-{secrets.token_hex(4)}"
        made_egress = not os.environ.get("DEVBOX_EGRESS_NETWORK") and not docker.network(
            DEFAULT_EGRESS
        )
        image = images.image_refs().default  # has python3, which the probe script needs
        if docker.image(image) is None:
            image = images.box_image()
        try:
            self.devboxes.create(name, image=image)
            found = probe.targets(docker, docker_host())
            result = self.devboxes.exec(
                name,
                probe.probe_command(),
                user="0",
                stdin=probe.probe_input(found, PROXY_URL + HEALTH_PATH),
            )
            data = probe.parse_output(result.stdout)
        except DevboxError as exc:
            return [failed("isolation probe", exc)]
        except ValueError:
            detail = f"the probe script failed in image {image}: {result.stderr.strip()[-200:]}"
            return [Check("isolation probe", FAIL, detail, "the probe needs python3 in the image")]
        finally:
            with contextlib.suppress(DevboxError):
                self.devboxes.delete([name])
                if made_egress:
                    remove_default_egress(docker)
        return probe_checks(found, data)


def probe_checks(found: list[probe.Target], data: dict[str, Any]) -> list[Check]:
    control = str(data.get("proxy"))
    checks = [
        Check("isolation control", PASS, f"the probe box reaches its own proxy (HTTP {control})")
        if control.isdigit()
        else Check(
            "isolation control",
            FAIL,
            f"the probe box could not reach its proxy ({control}), so the probe proves nothing",
            "see `docker logs` of the probe's proxy: `devbox create` and `devbox exec` should work",
        )
    ]
    by_target: dict[int, list[tuple[int, bool, str]]] = {}
    for index, port, reached, how in data["results"]:
        by_target.setdefault(int(index), []).append((int(port), bool(reached), str(how)))
    for index, target in enumerate(found):
        tries = by_target.get(index, [])
        label = f"isolation {target.kind} {target.address}"
        reached = [f"{port} ({how})" for port, hit, how in tries if hit]
        if not tries:
            checks.append(Check(label, FAIL, "not probed", "rerun `devbox doctor`"))
        elif reached:
            fix = PROBE_FIX["dns" if target.kind.startswith("dns") else target.kind]
            detail = f"{target.why}: REACHED on port {', '.join(reached)}"
            checks.append(Check(label, FAIL, detail, fix))
        else:
            hows = sorted({how for _port, _hit, how in tries})
            checks.append(Check(label, PASS, f"{target.why}: blocked ({', '.join(hows)})"))
    return checks
