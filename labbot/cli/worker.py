"""`labbot worker`: run this machine's sandboxes for bots elsewhere (see "Scaling out")."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import click

from labbot.cli.group import cli, emit_json, json_option
from labbot.config import Settings
from labbot.logs import configure_logging


@cli.command()
@click.option(
    "--drain",
    "drain_host",
    metavar="HOST_ID",
    help="Instead of serving: ask worker HOST_ID to take no new sessions and to exit once its"
    " sessions are idle.",
)
@json_option
@click.pass_context
def worker(ctx: click.Context, drain_host: str | None, json_: bool) -> None:
    """Serve code execution for labbot bots over NATS until stopped (SIGTERM or Ctrl-C).

    \b
    Examples:
      LABBOT_NATS_URL=nats://10.0.0.1:4222 LABBOT_HOST_ID=w1 labbot worker
      labbot worker --drain w1
    """
    settings: Settings = ctx.obj["settings"]()
    if drain_host:
        sessions = asyncio.run(_drain(settings, drain_host))
        if json_:
            emit_json({"host": drain_host, "answered": sessions is not None, "sessions": sessions})
        elif sessions is None:
            raise click.ClickException(f"worker {drain_host} did not answer")
        else:
            click.echo(f"{drain_host} draining; it exits once its {sessions} session(s) idle out")
        return
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from labbot.app import create_worker

    agent = create_worker(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    await agent.serve()


async def _drain(settings: Settings, host: str) -> int | None:
    from labbot.remote import bus, wire
    from labbot.remote.rpc import control

    nc = await bus.connect(settings, "labbot-cli")
    try:
        value = await control(nc, host, wire.CtlRequest(op="drain"))
    finally:
        await nc.close()
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@cli.command("nats-config")
@click.option("--worker", "workers", multiple=True, required=True, help="A worker's host id.")
@click.option("--listen", default="0.0.0.0:4222", show_default=True, help="host:port to serve.")
@click.option(
    "--store-dir", default="/var/lib/nats", show_default=True, help="JetStream's storage folder."
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Serve TLS with this cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="... and this key.")
@click.option(
    "--reply-window",
    default="1h",
    show_default=True,
    help="How long a worker may take to answer (longer than CODE_EXECUTION_TIMEOUT).",
)
@click.option(
    "--env-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write bot.env and <worker>.env here (mode 600) with each machine's settings.",
)
def nats_config(
    workers: tuple[str, ...],
    listen: str,
    store_dir: str,
    tls_cert: str | None,
    tls_key: str | None,
    reply_window: str,
    env_dir: Path | None,
) -> None:
    """Print a nats-server config with a user per role and fresh passwords: the bot may call
    every worker; each worker may use only its own subjects.

    \b
    Example:
      labbot nats-config --worker w1 --worker w2 --env-dir secrets > nats.conf
    """
    from labbot.remote.natsconf import server_config

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    bot_password = secrets.token_urlsafe(24)
    passwords = {w: secrets.token_urlsafe(24) for w in workers}
    tls = (Path(tls_cert), Path(tls_key)) if tls_cert and tls_key else None
    click.echo(
        server_config(
            listen=listen,
            store_dir=Path(store_dir),
            bot_password=bot_password,
            workers=passwords,
            tls=tls,
            reply_window=reply_window,
        ),
        nl=False,
    )
    if env_dir is None:
        click.echo("# Passwords are only in this file; use --env-dir to get each machine's .env.")
        return
    env_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        "bot": f"LABBOT_EXECUTOR=nats\nLABBOT_NATS_USER=bot\nLABBOT_NATS_PASSWORD={bot_password}\n"
    }
    for host, password in passwords.items():
        files[host] = (
            f"LABBOT_HOST_ID={host}\nLABBOT_NATS_USER=worker-{host}\n"
            f"LABBOT_NATS_PASSWORD={password}\n"
        )
    for name, text in files.items():
        path = env_dir / f"{name}.env"
        path.touch(mode=0o600)
        path.write_text(text)
    click.echo(f"# Wrote {', '.join(f'{n}.env' for n in files)} to {env_dir}", err=True)
