"""Spending limits: per user per day and per month, per guild per month (US dollars), and per
user per day in tokens for models without a known price. Checked before every model request,
recorded after it.

    budgets = Budgets(settings, ledger, preferences.admin, now=clock)
    ticket = await budgets.reserve(payer, model, input_tokens=1234)   # or BudgetExceeded
    ...the request...
    warnings = await budgets.settle(ticket, record)                   # BudgetWarning events

A request is never cut once it has started; the next one is refused with one sentence (which
limit, what was spent, when it resets in TIMEZONE). Several requests of one user at once stay
correct: ``reserve`` holds each request's upper-bound cost in the ledger's transaction, so at
most one request crosses a limit. Admins set other limits for one user, role or guild at run
time (kept in AdminLists under "budgets"); admins are exempt unless they opted in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from labbot.chat.preferences import AdminLists
from labbot.chat.reports import usd
from labbot.chat.usage import (
    ExecutionRecord,
    Hold,
    Spent,
    UsageLedger,
    UsageRecord,
    Window,
    fits,
)
from labbot.config import Settings
from labbot.core import ExecutionResult, Status
from labbot.errors import LabbotError
from labbot.llm import tokens
from labbot.llm.models import ModelInfo

log = logging.getLogger(__name__)

LimitName = Literal["user_daily_usd", "user_monthly_usd", "guild_monthly_usd", "user_daily_tokens"]
LIMITS: tuple[LimitName, ...] = (
    "user_daily_usd",
    "user_monthly_usd",
    "guild_monthly_usd",
    "user_daily_tokens",
)
WARN_AT = Decimal("0.8")  # the share of a limit past which the user is warned, once per period
_LIST = "budgets"  # the admins' list that holds the limits they set
OverrideKind = Literal["user", "role", "guild"]


@dataclass(frozen=True)
class Payer:
    """Who a request is for: the user, the guild it was asked in (None: a DM or the CLI), the
    user's roles there, and whether they are one of the bot's admins."""

    user: str
    guild: str | None = None
    roles: frozenset[str] = frozenset()
    admin: bool = False


class BudgetExceeded(LabbotError):
    """A spending limit is reached; the message says which, what was spent, when it resets."""


@dataclass(frozen=True, slots=True)
class BudgetWarning(Status):
    """A limit passed WARN_AT of its amount (a status note the front ends show)."""

    kind: ClassVar[str] = "budget_warning"


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit that applies to a user, for /usage."""

    name: LimitName
    limit: Decimal
    spent: Decimal
    resets: datetime

    @property
    def left(self) -> Decimal:
        """What may still be spent (never below zero)."""
        return max(self.limit - self.spent, Decimal(0))


@dataclass
class Ticket:
    """A request admitted by ``reserve``: settle or release it."""

    payer: Payer
    hold: Hold | None
    windows: list[tuple[LimitName, Window, datetime]]


@dataclass
class Overrides:
    """Limits admins set by command: per user, role or guild id, a limit name → its amount
    (None: no limit); and the admins who opted in to limits."""

    user: dict[str, dict[str, str | None]] = field(default_factory=dict)
    role: dict[str, dict[str, str | None]] = field(default_factory=dict)
    guild: dict[str, dict[str, str | None]] = field(default_factory=dict)
    opted_in: set[str] = field(default_factory=set)

    @classmethod
    def from_json(cls, data: Any) -> Overrides:
        """As kept in AdminLists (an empty value: none set)."""
        data = data or {}
        return cls(
            user=dict(data.get("user", {})),
            role=dict(data.get("role", {})),
            guild=dict(data.get("guild", {})),
            opted_in=set(data.get("opted_in", [])),
        )

    def to_json(self) -> dict[str, Any]:
        """As kept in AdminLists."""
        return {
            "user": self.user,
            "role": self.role,
            "guild": self.guild,
            "opted_in": sorted(self.opted_in),
        }


def parse_amount(text: str) -> Decimal | None:
    """An amount an admin typed: "5", "$2.50", "20000"; "none" (no limit) gives None.

    :raises LabbotError: anything else, with what to type instead.
    """
    cleaned = text.strip().lower().lstrip("$").replace(",", "")
    if cleaned in ("none", "unlimited", "off"):
        return None
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise LabbotError(
            f"{text[:40]!r} is not an amount.",
            hint='Give a number such as 5 or 2.50 (US dollars, or tokens), or "none".',
        )
    return amount


def amount_text(name: LimitName, amount: Decimal) -> str:
    """An amount in its limit's unit."""
    return f"{int(amount):,} tokens" if name == "user_daily_tokens" else usd(amount)


class Budgets:
    """Checks and records what each model request spends (and counts executions)."""

    def __init__(
        self,
        settings: Settings,
        ledger: UsageLedger,
        admin: AdminLists,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.admin = admin
        self.now = now
        self.zone = ZoneInfo(settings.TIMEZONE)
        self.defaults: dict[LimitName, Decimal | None] = {
            "user_daily_usd": _decimal(settings.USER_DAILY_BUDGET_USD),
            "user_monthly_usd": _decimal(settings.USER_MONTHLY_BUDGET_USD),
            "guild_monthly_usd": _decimal(settings.GUILD_MONTHLY_BUDGET_USD),
            "user_daily_tokens": _decimal(settings.USER_DAILY_TOKENS),
        }
        # Called with every UsageRecord and ExecutionRecord written (the metrics listen).
        self.observers: list[Callable[[UsageRecord | ExecutionRecord], None]] = []

    # -- the limits that apply ------------------------------------------------------------------
    async def overrides(self) -> Overrides:
        """What admins set by command."""
        return Overrides.from_json(await self.admin.get(_LIST))

    async def set_override(
        self, kind: OverrideKind, target: str, name: LimitName, amount: Decimal | None | str
    ) -> None:
        """Give one user, role or guild another limit (None: no limit; "default": the
        setting's again)."""
        found = await self.overrides()
        table = getattr(found, kind)
        limits = dict(table.get(target, {}))
        if amount == "default":
            limits.pop(name, None)
        else:
            limits[name] = None if amount is None else str(amount)
        if limits:
            table[target] = limits
        else:
            table.pop(target, None)
        await self.admin.put(_LIST, found.to_json())

    async def opt_in(self, admin_id: str, *, on: bool) -> None:
        """An admin chooses whether the limits apply to them."""
        found = await self.overrides()
        (found.opted_in.add if on else found.opted_in.discard)(admin_id)
        await self.admin.put(_LIST, found.to_json())

    async def limits_for(self, payer: Payer) -> dict[LimitName, Decimal]:
        """The limits that apply to ``payer`` (an exempt admin: none)."""
        found = await self.overrides()
        if payer.admin and payer.user not in found.opted_in:
            return {}
        limits: dict[LimitName, Decimal] = {}
        for name in LIMITS:
            if name == "guild_monthly_usd":
                if payer.guild is None:
                    continue
                value = _pick([found.guild.get(payer.guild, {})], name, self.defaults[name])
            elif name in found.user.get(payer.user, {}):
                value = _decimal(found.user[payer.user][name])
            else:
                roles = [found.role[r] for r in sorted(payer.roles) if r in found.role]
                value = _pick(roles, name, self.defaults[name])
            if value is not None:
                limits[name] = value
        return limits

    def windows(
        self, payer: Payer, limits: dict[LimitName, Decimal], now: datetime
    ) -> list[tuple[LimitName, Window, datetime]]:
        """Each limit's window now, with when it resets."""
        local = now.astimezone(self.zone)
        day = datetime.combine(local.date(), time(0), tzinfo=self.zone)
        next_day = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=self.zone)
        month = day.replace(day=1)
        next_month = (month + timedelta(days=32)).replace(day=1)
        found = []
        for name, limit in limits.items():
            since, resets = (day, next_day) if "daily" in name else (month, next_month)
            scope: Literal["user", "guild"] = "guild" if name.startswith("guild") else "user"
            key = payer.guild if scope == "guild" else payer.user
            unit: Literal["usd", "tokens"] = "tokens" if name.endswith("tokens") else "usd"
            assert key is not None
            found.append((name, Window(scope, key, since, unit, limit), resets))
        return found

    # -- before and after a request ---------------------------------------------------------
    async def reserve(self, payer: Payer, model: ModelInfo, *, input_tokens: int) -> Ticket:
        """Admit a request of ``input_tokens`` to ``model``, holding its most it may cost.

        :raises BudgetExceeded: a limit is reached (the sentence names it).
        """
        now = self.now()
        windows = self.windows(payer, await self.limits_for(payer), now)
        if not windows:
            return Ticket(payer, None, [])
        output = min(self.settings.MAX_OUTPUT_TOKENS, model.max_output)
        admit = tokens.estimate_cost(model.name, input_tokens=input_tokens, output_tokens=0)
        most = tokens.estimate_cost(model.name, input_tokens=input_tokens, output_tokens=output)
        priced = admit is not None and most is not None
        hold = Hold(
            id=uuid.uuid4().hex,
            user=payer.user,
            guild=payer.guild,
            priced=priced,
            admit=admit if admit is not None else Decimal(input_tokens),
            amount=most if most is not None else Decimal(input_tokens + output),
        )
        spent = await self.ledger.reserve(hold, [w for _, w, _ in windows], now=now)
        if not fits(hold, spent):
            raise BudgetExceeded(self._refusal(windows, spent, hold))
        return Ticket(payer, hold, windows)

    async def settle(self, ticket: Ticket, entry: UsageRecord) -> list[BudgetWarning]:
        """Record the request (in place of its hold); a warning for each limit it took past
        WARN_AT."""
        now = self.now()
        entry = _with_guild(entry, ticket.payer.guild)
        if ticket.hold is None:
            await self.ledger.record(entry, at=now)
            self._observe(entry)
            return []
        spent = await self.ledger.settle(
            ticket.hold.id, entry, [w for _, w, _ in ticket.windows], now=now
        )
        self._observe(entry)
        warnings = []
        for (name, window, resets), after in zip(ticket.windows, spent, strict=True):
            cost = entry.cost_usd
            if (window.unit == "usd") != (cost is not None):
                continue
            amount = cost if cost is not None else entry.input_tokens + entry.output_tokens
            mark = window.limit * WARN_AT
            if after.used - amount < mark <= after.used:  # crossed now: once per period
                warnings.append(BudgetWarning(self._warning(name, after, resets)))
        return warnings

    async def release(self, ticket: Ticket) -> None:
        """The request failed: its hold no longer counts."""
        if ticket.hold is not None:
            await self.ledger.release(ticket.hold.id)

    async def executed(self, payer: Payer, conversation: str, result: ExecutionResult) -> None:
        """Count one execution of the model's code."""
        entry = ExecutionRecord(
            payer.user, conversation, result.status, result.duration * 1000, payer.guild
        )
        await self.ledger.record_execution(entry, at=self.now())
        self._observe(entry)

    def _observe(self, entry: UsageRecord | ExecutionRecord) -> None:
        for observer in self.observers:
            try:
                observer(entry)
            except Exception:  # a metric never fails a turn
                log.exception("budgets.observer_failed")

    # -- what /usage shows ----------------------------------------------------------------------
    async def states(self, payer: Payer) -> list[LimitState]:
        """Spent and left for each limit that applies to ``payer``."""
        now = self.now()
        windows = self.windows(payer, await self.limits_for(payer), now)
        spent = await self.ledger.measure([w for _, w, _ in windows], now=now)
        return [
            LimitState(name, window.limit, s.used, resets)
            for (name, window, resets), s in zip(windows, spent, strict=True)
        ]

    # -- sentences --------------------------------------------------------------------------
    def _refusal(
        self, windows: list[tuple[LimitName, Window, datetime]], spent: list[Spent], hold: Hold
    ) -> str:
        for (name, window, resets), s in zip(windows, spent, strict=True):
            if hold.counts_in(window) and s.total + hold.admit > window.limit:
                running = (
                    f" (with {amount_text(name, s.held)} held by requests still running)"
                    if s.held
                    else ""
                )
                return (
                    f"{_owner(name)} reached {_limit_name(name)} of"
                    f" {amount_text(name, window.limit)}: {amount_text(name, s.used)} spent"
                    f" {_period(name)}{running}; it resets {self.when(resets)}."
                )
        return "A spending limit is reached."  # not reached: fits() said otherwise

    def _warning(self, name: LimitName, spent: Spent, resets: datetime) -> str:
        share = int(spent.used / spent.window.limit * 100)
        return (
            f"{_owner(name)} used {share}% of {_limit_name(name)}"
            f" ({amount_text(name, spent.used)} of {amount_text(name, spent.window.limit)});"
            f" it resets {self.when(resets)}."
        )

    def when(self, moment: datetime) -> str:
        """A reset time in the operator's time zone: "at 00:00 on 8 December 2026 (UTC)"."""
        local = moment.astimezone(self.zone)
        return f"at {local:%H:%M} on {local.day} {local:%B %Y} ({self.settings.TIMEZONE})"


def _owner(name: LimitName) -> str:
    return "This server has" if name.startswith("guild") else "You have"


def _limit_name(name: LimitName) -> str:
    return {
        "user_daily_usd": "your daily budget",
        "user_monthly_usd": "your monthly budget",
        "guild_monthly_usd": "its monthly budget",
        "user_daily_tokens": "your daily token limit for models without a known price",
    }[name]


def _period(name: LimitName) -> str:
    return "today" if "daily" in name else "this month"


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _pick(
    tables: list[dict[str, str | None]], name: str, default: Decimal | None
) -> Decimal | None:
    """The most generous of the overrides that name this limit (None: no limit), else the
    default."""
    values = [table[name] for table in tables if name in table]
    if not values:
        return default
    if any(v is None for v in values):
        return None
    return max(Decimal(str(v)) for v in values)


def _with_guild(entry: UsageRecord, guild: str | None) -> UsageRecord:
    return entry if entry.guild == guild else replace(entry, guild=guild)
