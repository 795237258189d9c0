"""What the ledger's rows add up to, for people: the quiet line after an answer (a turn's
usage events summed) and the usage report per user, guild, model or day, with totals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Literal

from labbot.chat.usage import ExecutionRow, RequestRow
from labbot.core import Usage


@dataclass
class TurnTotals:
    """The usage events of one turn added up: the quiet line shown after an answer."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    estimated: bool = False
    models: list[str] = field(default_factory=list)

    def add(self, event: Usage) -> None:
        """Count one request's usage event."""
        self.requests += 1
        self.input_tokens += event.input_tokens
        self.cached_tokens += event.cached_tokens
        self.output_tokens += event.output_tokens
        if event.cost_usd is None:
            self.unpriced += 1
        else:
            self.cost_usd += Decimal(event.cost_usd)
        self.estimated = self.estimated or event.estimated
        if event.model not in self.models:
            self.models.append(event.model)

    def line(self) -> str:
        """ "1,234 tokens in · 56 out · $0.0012 · gpt-4o-mini" ("~" when estimated)."""
        approx = "~" if self.estimated else ""
        cost = "cost unknown" if self.unpriced == self.requests else usd(self.cost_usd)
        if 0 < self.unpriced < self.requests:
            cost += " + unpriced"
        return (
            f"{approx}{self.input_tokens:,} tokens in · {approx}{self.output_tokens:,} out"
            f" · {cost} · {', '.join(self.models)}"
        )

    def to_json(self) -> dict[str, object]:
        """The totals as JSON (cost a decimal string, None when no request had a price)."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.unpriced == self.requests else str(self.cost_usd),
            "estimated": self.estimated,
            "models": self.models,
        }


def usd(amount: Decimal) -> str:
    """Dollars as people read them: $5.00, $0.90, $0.0031 (cents when they say it all)."""
    if amount >= 1 or amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return f"${amount:,.4f}"


Grouping = Literal["user", "guild", "model", "day"]


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Totals for one user, guild, model or day (``key``; "" for none, e.g. DMs)."""

    key: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
    executions: int = 0


def report(
    requests: Sequence[RequestRow],
    executions: Sequence[ExecutionRow],
    *,
    by: Grouping,
    timezone: str,
) -> tuple[list[ReportRow], ReportRow]:
    """Requests and executions summed per ``by`` (days in ``timezone``), sorted by key, and
    the totals (key "total"). Executions have no model: by model only the totals count them."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)

    def key(user: str, guild: str | None, model: str, created: datetime) -> str:
        if by == "user":
            return user
        if by == "guild":
            return guild or ""
        if by == "model":
            return model
        return created.astimezone(zone).date().isoformat()

    rows: dict[str, ReportRow] = {}
    total = ReportRow("total")
    for r in requests:
        k = key(r.user, r.guild, r.model, r.created)
        rows[k], total = _add(rows.get(k, ReportRow(k)), r), _add(total, r)
    for e in executions:
        total = replace(total, executions=total.executions + 1)
        if by == "model":  # an execution has no model: counted in the totals only
            continue
        k = key(e.user, e.guild, "", e.created)
        found = rows.get(k, ReportRow(k))
        rows[k] = replace(found, executions=found.executions + 1)
    return [rows[k] for k in sorted(rows)], total


def _add(row: ReportRow, request: RequestRow) -> ReportRow:
    return replace(
        row,
        requests=row.requests + 1,
        input_tokens=row.input_tokens + request.input_tokens,
        output_tokens=row.output_tokens + request.output_tokens,
        cost_usd=row.cost_usd + (request.cost_usd or 0),
        unpriced_requests=row.unpriced_requests + (request.cost_usd is None),
    )


def report_table(rows: Sequence[ReportRow], total: ReportRow, by: Grouping) -> list[str]:
    """The report as aligned text lines (a header, a line per key, the totals)."""
    head = f"{by:<24}{'requests':>9}{'input':>13}{'output':>11}{'USD':>11}{'execs':>7}"
    lines = [head]
    for row in [*rows, total]:
        key = (row.key or "(none)")[:23]
        lines.append(
            f"{key:<24}{row.requests:>9,}{row.input_tokens:>13,}{row.output_tokens:>11,}"
            f"{row.cost_usd:>11.4f}{row.executions:>7,}"
        )
    return lines
