"""`labbot worker`: run this machine's sandboxes for bots elsewhere (see "Scaling out")."""

from __future__ import annotations

import asyncio
import signal

import click

from labbot.cli import cli, emit_json, json_option
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
    from labbot.remote.worker import WorkerAgent

    agent = WorkerAgent(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    await agent.serve()


async def _drain(settings: Settings, host: str) -> int | None:
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from labbot.remote import bus

    nc = await bus.connect(settings, "labbot-cli")
    try:
        request = bus.encode({"op": "drain"})
        msg = await nc.request(bus.ctl_subject(host), request, timeout=10)
    except (NoRespondersError, NatsTimeout):
        return None
    finally:
        await nc.close()
    return bus.decode(msg.data).get("value")
