"""The `juice` command: run the service, manage keys, migrate, import models; and, as a user of any Juice
over its HTTP API, upload files and run jobs (juice/user_cli.py).

juice up [--host H] [--port P]        API + one worker + the inference server on the embedded default
juice api [--host H] [--port P]       the API alone
juice worker [--concurrency N] [--sweeper]  a Celery worker; --sweeper also re-queues lost jobs
juice inference [--host H] [--port P] the server behind /v1/chat/completions
juice keys create --tenant NAME       prints the new key alone on its last line
juice keys list | juice keys revoke KEY
juice db upgrade | juice db check
juice models import-gguf FILE --name NAME   a GGUF -> a Hugging Face folder under the first model root
juice models list
juice files upload PATH               (user commands: --api-url/JUICE_API_URL, --api-key/JUICE_API_KEY)
juice jobs create|list|watch|cancel|pause|resume|download
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from api.core.config import Settings, get_settings

# Every directory Juice creates for its state, and the home itself, is private to the user running it; the
# processes below also run with umask 077, so the files they write (juice.db, secret_key, artifacts) are
# 0600. Base models are not tenant data and a model root may be shared, so `juice models` keeps the umask.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700


def private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def _private_home(home: Path) -> None:
    """Create $JUICE_HOME 0700, or make an existing one 0700: it holds the database, the link-signing
    secret, the API key file and (by default) every artifact, and a private home hides all of them."""
    home.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077 == 0:
        return
    try:
        home.chmod(PRIVATE_DIR_MODE)
    except PermissionError:
        print(
            f"juice: warning: {home} is open to other users (mode {mode:04o}) and not ours to change; "
            f"run `chmod 700 {home}`",
            file=sys.stderr,
        )
    else:
        print(f"juice: made {home} private (mode {mode:04o} -> 0700)", file=sys.stderr)


def _prepare_home(settings: Settings) -> None:
    """The home (0700, tightened if it exists) and the folders of the embedded default, created 0700.

    Folders that already exist, other than the home, keep their mode: a work dir, model root or artifact
    folder named by a JUICE_* variable is the operator's to share or not."""
    _private_home(settings.home)
    folders = [settings.work_path, *settings.model_root_paths]
    if settings.storage_url == "":
        folders.append(Path(settings.resolved_storage_url))
    if settings.resolved_broker_url.startswith("filesystem"):
        folders.append(settings.broker_folder)
    for path in folders:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def _require_secret(settings: Settings) -> None:
    """Stop with the settings' own message when the API could not sign download links."""
    from api.core.security import SecretKeyError, server_secret

    try:
        server_secret(settings)
    except SecretKeyError as e:
        print(f"juice: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_db(args: argparse.Namespace) -> int:
    from api.db import migrate

    _prepare_home(get_settings())
    if args.action == "upgrade":
        migrate.upgrade()
        print("database is at the newest schema")
    else:
        migrate.check()
        print("models and migrations agree")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from api.db.session import session_scope
    from api.services import keys

    with session_scope() as s:
        if args.action == "create":
            key = keys.create_key(s, args.tenant)
            print(f"Created an API key for tenant '{args.tenant}'. It is shown only once:", file=sys.stderr)
            print(key)
        elif args.action == "list":
            for tenant, prefix, created, revoked in keys.list_keys(s):
                print(f"{tenant}\t{prefix}…\t{created}\t{'revoked' if revoked else 'active'}")
        else:
            if not keys.revoke_key(s, args.key):
                print("no active key matches", file=sys.stderr)
                return 1
            print("revoked")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    _require_secret(settings)
    uvicorn.run(
        "api.main:app", host=args.host or settings.host, port=args.port or settings.port, log_level="info"
    )
    return 0


def cmd_inference(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    _prepare_home(settings)
    _require_secret(settings)
    from inference.server import create_app

    host, port = args.host or settings.inference_host, args.port or settings.inference_port
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.loglevel)
    return 0


def worker_argv(concurrency: int, loglevel: str) -> list[str]:
    settings = get_settings()
    return [
        "worker",
        "-Q",
        settings.queue_name,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--pool",
        "prefork",
        "-n",
        f"juice@%h-{os.getpid()}",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    _prepare_home(settings)
    from worker.celery_app import app

    if args.sweeper:
        from worker.sweeper import Sweeper, WebhookDispatcher, warm_up

        warm_up(settings)  # before any thread or pool fork: see its docstring
        Sweeper(settings).start()
        WebhookDispatcher(settings).start()
    app.worker_main(worker_argv(args.concurrency, args.loglevel))
    return 0


def _default_key(settings: Settings) -> str:
    """The embedded default's own key, made once and kept in $JUICE_HOME/api_key (mode 0600)."""
    from api.db.session import session_scope
    from api.services import keys

    path = settings.home / "api_key"
    if path.exists():
        return path.read_text().strip()
    with session_scope() as s:
        key = keys.create_key(s, "default")
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def init_embedded(settings: Settings) -> str:
    """What `juice up` does before it starts anything: the private home and its folders, the newest
    schema, the default API key and the link-signing secret (generated on a SQLite home). Its key."""
    _prepare_home(settings)
    from api.db import migrate

    migrate.upgrade()
    key = _default_key(settings)
    _require_secret(settings)
    return key


def port_in_use(host: str, port: int) -> bool:
    """True when another server listens on host:port now (such as a second `juice up`). Probed as
    uvicorn binds: every address host resolves to, with SO_REUSEADDR, so a port that only has
    TIME_WAIT connections left from a stopped server counts as free, and any error but EADDRINUSE
    (a host that does not resolve, a port below 1024) is left for the server itself to report."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds ::
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    own_inference = settings.inference_backend == "juice"  # else chat completions go to an OpenAI server
    # A second `juice up` on one machine would otherwise start without its inference server (it fails to
    # bind, in the log only) and send its chat completions to the first one's, which refuses its token.
    if own_inference and port_in_use(settings.inference_host, settings.inference_port):
        print(
            f"juice up: the inference server's port {settings.inference_host}:{settings.inference_port} is"
            " in use (another `juice up`?); set JUICE_INFERENCE_PORT to a free port",
            file=sys.stderr,
        )
        return 1
    key = init_embedded(settings)
    host, port = args.host or settings.host, args.port or settings.port
    env = {**os.environ, "JUICE_HOME": str(settings.home)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "juice.cli", "worker", "--sweeper", "--loglevel", "warning"], env=env
        )
    ]
    if own_inference:  # chat completions: models load on first use, so an idle server costs little
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "juice.cli", "inference", "--loglevel", "warning"], env=env
            )
        )
    url = settings.public_url or f"http://{host}:{port}"
    print(
        f"Juice is up.\n  Dashboard: {url}/\n  API:       {url}/v1\n  API key:   {key}\n"
        f"  State:     {settings.home}\n  Models:    {':'.join(map(str, settings.model_root_paths))}",
        flush=True,
    )
    # uvicorn restores the handlers it found and re-raises the signal it caught when it stops; make that
    # signal a SystemExit so the `finally` below still stops the worker.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    try:
        import uvicorn

        uvicorn.run("api.main:app", host=host, port=port, log_level="warning")
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = get_settings()
    _prepare_home(settings)
    root = settings.model_root_paths[0]
    if args.action == "list":
        from api.services.models import list_local_models

        for model in list_local_models(settings):  # the same list GET /v1/models shows
            print(model.id)
        return 0
    from trainer.modeling import import_gguf

    dest = root / args.name
    if dest.exists() and not args.force:
        print(f"{dest} already exists (use --force to replace it)", file=sys.stderr)
        return 1
    import_gguf(Path(args.file), dest, overwrite=args.force)
    print(f'imported {args.file} -> {dest}\nuse it as a job\'s model: "{args.name}"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="juice", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    for name in ("up", "api"):
        sp = sub.add_parser(name, help="run API + worker" if name == "up" else "run the API")
        sp.add_argument("--host")
        sp.add_argument("--port", type=int)
        sp.set_defaults(func=cmd_up if name == "up" else cmd_api)

    sp = sub.add_parser("worker", help="run a Celery worker")
    sp.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    sp.add_argument(
        "--sweeper",
        "--beat",
        dest="sweeper",
        action="store_true",
        help="also run the sweeper (one or more workers per deployment)",
    )
    sp.add_argument("--loglevel", default="info")
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("inference", help="run the inference server behind /v1/chat/completions")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp.add_argument("--loglevel", default="info")
    sp.set_defaults(func=cmd_inference)

    sp = sub.add_parser("keys", help="manage API keys")
    ks = sp.add_subparsers(dest="action", required=True)
    kc = ks.add_parser("create")
    kc.add_argument("--tenant", required=True)
    ks.add_parser("list")
    kr = ks.add_parser("revoke")
    kr.add_argument("key")
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("db", help="database schema")
    sp.add_argument("action", choices=["upgrade", "check"])
    sp.set_defaults(func=cmd_db)

    sp = sub.add_parser("models", help="local base models")
    ms = sp.add_subparsers(dest="action", required=True)
    mi = ms.add_parser("import-gguf")
    mi.add_argument("file")
    mi.add_argument("--name", required=True)
    mi.add_argument("--force", action="store_true")
    ms.add_parser("list")
    sp.set_defaults(func=cmd_models)

    from juice import user_cli  # the user commands over the HTTP API (files, jobs): torch-free

    user_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "models":
        private_umask()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
