"""`devbox watch`, and the step `devbox exec` and `shell` take when a proxy needs its config.

Both call the library's healing (services/healing.py, services/watch.py); this module only
parses, prints, and turns SIGINT/SIGTERM into a clean stop.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from devbox_cli.cli.common import Output, OutputOpt, make_client

if TYPE_CHECKING:
    import typer

    from devbox_cli.services.watch import WatchEvent


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(output: OutputOpt = Output.text) -> None:
    """Heal proxies as they restart: follow the engine's events, push configs.

    A proxy container that starts again (daemon restart, reboot, `docker
    restart`, OOM kill) has no config and refuses all traffic; this pushes
    it within seconds, starts a proxy that stopped while its box runs, and
    on every (re)connect to the engine heals every devbox of the store once.
    Runs in the foreground, one line per action (-o json: JSON lines), until
    SIGINT or SIGTERM. Asks for the store passphrase once if it has one and
    keeps the key in memory only. See the README for a systemd user unit.
    """
    import json
    import signal
    import threading

    client = make_client()
    client.store.unlock()

    def log(event: WatchEvent) -> None:
        line = json.dumps(event.to_json()) if output is Output.json else event.line()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    watcher = client.watcher(log)

    # SIGINT and SIGTERM are blocked and taken with sigtimedwait here, on the main thread,
    # so stopping is plain code (no handler running inside the watcher's locks). They get a
    # handler first: one a shell set to "ignore" (a background job) would be dropped.
    stops = {signal.SIGINT, signal.SIGTERM}
    for sig in stops:
        signal.signal(sig, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    thread = threading.Thread(target=watcher.run, name="devbox-watch")  # inherits the mask
    thread.start()
    try:
        while thread.is_alive() and signal.sigtimedwait(stops, 0.5) is None:
            pass
    finally:
        watcher.stop()
        thread.join()


def heal_before_exec(name: str) -> None:
    """fastexec's slow path: devbox `name`'s proxy started again since its last push (or
    stopped while its box runs), so hand it its config before the command runs. A failure
    is a warning: the command still runs, without egress, as the proxy fails closed."""
    from devbox_cli import render
    from devbox_cli.errors import DevboxError

    try:
        result = make_client().heal_devbox(name)
    except DevboxError as exc:
        render.print_warning(f"could not check the proxy of devbox {name}: {exc.message}")
        return
    if result.failed:
        render.print_warning(
            f"the proxy of devbox {name} restarted and holds no config, so the devbox has no "
            f"egress: {result.detail}. Fix: {result.hint}"
        )
