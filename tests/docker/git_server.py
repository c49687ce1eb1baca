"""A git smart-HTTP server over TLS, the real upstream of the host-gateway tests: git's own
`git http-backend` CGI behind a small aiohttp server, run in a container from the proxy
image (python3, aiohttp and git) on the test egress network.

    python git_server.py CERT KEY AUTH_SHA256

Every path under /git/ is the CGI (repository `demo.git`, made at start with one commit)
and needs `Authorization` whose SHA-256 is AUTH_SHA256 (the real credential: only its hash
is on the command line); without it the answer is 401 with a Basic challenge, as a real
forge answers. /whoami answers anyone with what arrived (the SHA-256 of Authorization and of
x-api-key, never the values); /reflect echoes the Authorization header back in a header and
the body (the proxy must redact it). Every request is logged as one JSON line on stdout:
method, path, whether the credential was right, and whether a gateway token (`gwt_`) was
anywhere in it (headers, target, body).
"""

import asyncio
import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile

from aiohttp import web

TOKEN_MARK = b"gwt_"
ROOT = tempfile.mkdtemp(prefix="git-")


def make_repo() -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": ROOT}  # fmt: skip
    bare = os.path.join(ROOT, "demo.git")
    work = os.path.join(ROOT, "work")

    def git(*args: str, cwd: str = ROOT) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "--bare", "-b", "main", bare)
    git("config", "http.receivepack", "true", cwd=bare)
    git("init", "-b", "main", work)
    with open(os.path.join(work, "README"), "w") as fh:
        fh.write("hello from the git server\n")
    git("add", "README", cwd=work)
    git("commit", "-m", "first", cwd=work)
    git("push", bare, "main", cwd=work)


def log(request: web.Request, **fields: object) -> None:
    print(json.dumps({"method": request.method, "path": request.path, **fields}), flush=True)


def token_in(request: web.Request, body: bytes) -> bool:
    head = request.raw_path.encode() + b"".join(
        k.encode() + v.encode("latin-1", "replace") for k, v in request.headers.items()
    )
    return TOKEN_MARK in head or TOKEN_MARK in body


def auth_hash(request: web.Request, name: str = "Authorization") -> str | None:
    value = request.headers.get(name)
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


async def whoami(request: web.Request) -> web.Response:
    body = await request.read()
    seen = token_in(request, body)
    log(request, token=seen)
    return web.json_response(
        {
            "host": request.host,
            "auth_sha256": auth_hash(request),
            "api_key_sha256": auth_hash(request, "x-api-key"),
            "token_seen": seen,
            "header_names": sorted(k.lower() for k in request.headers),
            "query": request.query_string,
        }
    )


async def reflect(request: web.Request) -> web.Response:
    value = request.headers.get("Authorization", "")
    log(request, token=token_in(request, b""))
    return web.Response(text=f"you sent: {value}\n", headers={"X-You-Sent": value})


async def git_cgi(request: web.Request) -> web.StreamResponse:
    expected = request.app["auth"]
    body_seen = bytearray()  # the pack a push sends: scanned for a token too
    ok = auth_hash(request) == expected
    if not ok:
        await request.read()
        log(request, auth_ok=False, token=token_in(request, b""))
        return web.Response(
            status=401, text="auth needed\n", headers={"WWW-Authenticate": 'Basic realm="git"'}
        )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": ROOT,
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": request.path[len("/git") :],
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": "git",
        "REMOTE_ADDR": "127.0.0.1",
        "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
    }
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    proc = await asyncio.create_subprocess_exec(
        "git", "http-backend", env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    async def feed() -> None:
        async for chunk in request.content.iter_any():
            body_seen.extend(chunk)
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.close()

    feeder = asyncio.ensure_future(feed())
    status, headers = 200, {}
    while (line := (await proc.stdout.readline()).rstrip(b"\r\n")) != b"":
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers[name.strip()] = value.strip()
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    while chunk := await proc.stdout.read(65536):
        await resp.write(chunk)
    await feeder
    await proc.wait()
    await resp.write_eof()
    log(request, auth_ok=True, token=token_in(request, bytes(body_seen)), status=status)
    return resp


async def main() -> None:
    cert, key, expected = sys.argv[1], sys.argv[2], sys.argv[3]
    make_repo()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["auth"] = expected
    app.router.add_route("*", "/whoami", whoami)
    app.router.add_route("*", "/reflect", reflect)
    app.router.add_route("*", "/git/{tail:.*}", git_cgi)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    await web.TCPSite(runner, "0.0.0.0", 443, ssl_context=tls).start()
    print(json.dumps({"ready": True, "root": ROOT}), flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
