"""/export of a conversation whose bundle is over the upload limit: the bundle is kept with
the user's files and linked. Kept under the same quota as everything else, it must not push
out the very files it bundles (or any other) without a word."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.replies import Reply
from tests.frontends.web.test_discord_links import bot_on
from tests.servers import free_port

MIB = 1024 * 1024


@pytest.mark.parametrize("max_files", [3, 4])
async def test_a_linked_export_never_evicts_the_users_files(tmp_path: Path, max_files: int) -> None:
    """Three files of 4 MiB in a DM, then /export bundle: with room for a fourth file the
    bundle is kept and linked; without, nothing is kept and the answer says why."""
    port = free_port()
    endpoint = {
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DOWNLOAD_LISTEN": f"127.0.0.1:{port}",
        "MAX_FILES_PER_USER": max_files,
    }
    async with FakeDiscord() as fake:
        async with bot_on(fake, tmp_path / "data", **endpoint) as (model, bot):
            store = bot.services.store
            model.enqueue(Reply.text("Got them."))
            files = {f"part{n}.bin": os.urandom(4 * MIB) for n in range(3)}  # 12 MiB, no zip gain
            dm = await fake.user_message("keep these", dm=True, files=files)
            await fake.wait_for(lambda s: s.content == "Got them.")
            user = str(dm["author"]["id"])
            before = {r.id for r in await store.list(user)}
            assert len(before) == 3
            await fake.slash(
                "export",
                [{"name": "bundle", "type": 5, "value": True}],
                channel_id=int(dm["channel_id"]),
            )
            said = await fake.wait_for(lambda s: "export is" in (s.content or ""))
            after = {r.id for r in await store.list(user)}
            assert before <= after, (said.content, before - after)
            assert said.ephemeral
            if max_files == 3:
                assert after == before and "would remove older ones" in said.content
                assert said.previews == []
            else:
                assert len(after) == 4 and f"http://127.0.0.1:{port}/f/" in said.content
