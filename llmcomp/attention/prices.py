"""What an OpenAI model's tokens cost: a dated table of list prices, as data, and an estimate in dollars.

Prices change and this table does not follow them: it says the day it was checked (``CHECKED``), and
the command line (``--price-input``, ``--price-output``) and the environment (``LLMCOMP_PRICE_INPUT``,
``LLMCOMP_PRICE_OUTPUT``, read by ``llmcomp.settings``) override it, in dollars per 1M tokens. A model
not in the table has no price: the estimate says so rather than guess. No torch, no SDK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: the day the table was compared with public copies of OpenAI's pricing page (docs/sources.md names them)
CHECKED = "2026-12-02"
#: the Batch API's price, as a share of the live price
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class Price:
    """Dollars per 1M tokens: prompt (input), prompt tokens the server had cached, and completion (output)."""

    input: float
    output: float
    cached_input: float | None = None


#: OpenAI's list prices per 1M tokens (standard tier); a model left out had no price found in two sources
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
}
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-mini-2024-07-18 is priced as gpt-4o-mini


def table_price(model: str) -> Price | None:
    """The table's price of ``model`` (a dated snapshot as its base name), or None when it has none."""
    return PRICES.get(model) or PRICES.get(_DATED.sub("", model))


def dollars_text(dollars: float) -> str:
    """$1,234.50, $0.42, or the first digits of a fraction of a cent ($0.00082)."""
    if dollars >= 0.01 or dollars == 0:
        return f"${dollars:,.2f}"
    return f"${dollars:.6f}".rstrip("0") if dollars >= 0.000001 else "under $0.000001"


@dataclass(frozen=True)
class Cost:
    """An estimate in dollars, or why there is none (``dollars`` None), with where its price came from."""

    dollars: float | None
    basis: str  # "gpt-4o-mini's price of 2026-12-02", "the price given ($0.20 in, $0.80 out per 1M tokens)"

    def __str__(self) -> str:
        if self.dollars is None:
            return self.basis
        return f"about {dollars_text(self.dollars)} at {self.basis}"


def cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    price_input: float | None = None,
    price_output: float | None = None,
    batch: bool = False,
) -> Cost:
    """What ``prompt_tokens`` + ``completion_tokens`` cost with ``model``: the overrides (dollars per 1M
    tokens) where given, else the table's price; cached-input discounts are not counted (an upper bound)."""
    found = table_price(model)
    given = price_input is not None or price_output is not None
    p_in = price_input if price_input is not None else (found.input if found else None)
    p_out = price_output if price_output is not None else (found.output if found else None)
    if p_in is None or p_out is None:
        return Cost(None, f"cost unknown: no price for model {model[:80]!r}; set --price-input/--price-output")
    dollars = (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000
    if batch:
        dollars *= BATCH_DISCOUNT
    if given:
        basis = f"the price given (${p_in:g} input, ${p_out:g} output per 1M tokens)"
    else:
        basis = f"{model}'s price of {CHECKED}"
    return Cost(dollars, basis + (" with the Batch API's discount" if batch else ""))
