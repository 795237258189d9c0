"""`labbot packages`: the operator adds packages to the shared sandbox runtime."""

from __future__ import annotations

import asyncio

import click

from labbot.cli.group import cli, emit_json, json_option
from labbot.config import Settings
from labbot.errors import SandboxError


@cli.group(name="packages")
def packages_group() -> None:
    """The sandbox runtime's packages (shared by every user)."""


@packages_group.command(name="add")
@click.argument("requirements", nargs=-1, required=True)
@click.pass_context
def packages_add(ctx: click.Context, requirements: tuple[str, ...]) -> None:
    """Install packages into the runtime: wheels only, no installed version ever changes.

    \b
    Examples:
      labbot packages add torch
      labbot packages add "polars>=1.0" duckdb
    """
    from labbot.sandbox.packages import Installer, Package

    settings: Settings = ctx.obj["settings"]()
    installer = Installer(settings.LABBOT_RUNTIME_DIR, timeout=settings.PACKAGE_INSTALL_TIMEOUT)
    failed = []
    for requirement in requirements:
        ok, why = asyncio.run(installer.install(Package(requirement, ())))
        if ok:
            click.echo(f"installed {requirement}")
        else:
            failed.append(requirement)
            click.echo(f"not installed {requirement}: {why}", err=True)
    if failed:
        raise SandboxError(f"{len(failed)} of {len(requirements)} packages were not installed.")


@packages_group.command(name="list")
@json_option
@click.pass_context
def packages_list(ctx: click.Context, json_: bool) -> None:
    """List the runtime's packages and versions."""
    from labbot.sandbox.packages import Installer

    settings: Settings = ctx.obj["settings"]()
    installer = Installer(settings.LABBOT_RUNTIME_DIR, timeout=settings.PACKAGE_INSTALL_TIMEOUT)
    ok, out = asyncio.run(installer.freeze())
    if not ok:
        raise SandboxError(f"The runtime's packages could not be listed: {out}")
    rows = [dict(zip(("name", "version"), line.split("=="), strict=False)) for line in out.split()]
    if json_:
        emit_json(rows)
    else:
        for row in rows:
            click.echo(f"{row['name']} {row.get('version', '')}".rstrip())
