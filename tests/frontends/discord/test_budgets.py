"""Budgets on Discord: the usage footer and the 80% warning under an answer, /usage with what
is left, an admin's /budget for one user, the refusal sentence, and /usage all for admins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fakes.openai_server import Reply
from tests.frontends.discord.world import World, answer_to

BUDGET = {"USER_DAILY_BUDGET_USD": "1", "DISCORD_USAGE_FOOTER": True}
NOON = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)  # the budgets' test clock


@pytest.mark.parametrize("world", [BUDGET], indirect=True)
async def test_footer_warning_usage_override_refusal_and_report(world: World) -> None:
    fake, model, bot = world.fake, world.api, world.bot
    assert bot.services.engine is not None
    bot.services.engine.budgets.now = lambda: NOON
    alice = str(world.ids["alice"])
    model.enqueue(
        Reply.text("Spent a lot.", usage={"prompt_tokens": 2_000_000, "completion_tokens": 10**6})
    )
    await fake.user_message("expensive?", mention_bot=True)
    answer = await fake.wait_for(lambda s: "Spent a lot." in (s.content or ""))
    await bot.wait_idle()
    shown = fake.messages[answer.message_id]["content"]  # as last edited
    assert "-# 2,000,000 tokens in · 1,000,000 out · $0.90 · gpt-4o-mini" in shown
    assert "-# ⚠️ You have used 90% of your daily budget ($0.90 of $1.00)" in shown

    usage = await answer_to(fake, await fake.slash("usage"))
    assert (
        "Daily budget: $0.90 spent, $0.10 left of $1.00; resets at 00:00 on 15 March 2031"
        " (UTC)." in usage.content
    )

    refused = await answer_to(
        fake,
        await fake.slash(
            "budget",
            [
                {"name": "kind", "value": "user"},
                {"name": "target", "value": alice},
                {"name": "limit", "value": "daily"},
                {"name": "amount", "value": "0.50"},
            ],
            subcommand="set",
        ),
    )
    assert "Only the bot's admins" in refused.content
    done = await answer_to(
        fake,
        await fake.slash(
            "budget",
            [
                {"name": "kind", "value": "user"},
                {"name": "target", "value": alice},
                {"name": "limit", "value": "daily"},
                {"name": "amount", "value": "0.50"},
            ],
            subcommand="set",
            user="root",
        ),
    )
    assert done.content == f"daily limit for user {alice}: $0.50."
    asked = len(model.requests)
    await fake.user_message("and again?", mention_bot=True)
    sentence = await fake.wait_for(lambda s: "reached your daily budget" in (s.content or ""))
    assert (
        "You have reached your daily budget of $0.50: $0.90 spent today; it resets at"
        " 00:00 on 15 March 2031 (UTC)." in sentence.content
    )
    assert len(model.requests) == asked  # refused before the model was asked

    assert (
        "Only the bot's admins"
        in (
            await answer_to(fake, await fake.slash("usage", [{"name": "all", "value": True}]))
        ).content
    )
    report = await answer_to(
        fake, await fake.slash("usage", [{"name": "all", "value": True}], user="root")
    )
    assert "Usage, last 7 days, by user" in report.content
    assert alice in report.content and "total" in report.content
