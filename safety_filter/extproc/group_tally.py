"""What this process sent each replica group, and the per-request pick it makes from it (pure).

The per-request group picker (frugal.group_picker) weighs each group's learned step line
against its queue: the requests in flight there, and the prompt tokens of those still
waiting for a first token. Envoy knows the queue only as a count a balancer tick old; the
request processor knows it now, for what it sent itself. A request holds a `GroupTicket`
from its pick until its stream ends, however it ends (the processor's `close`): its
prompt tokens leave the group's queue at its first response headers (a stream's come with
its first text; a unary answer's with the whole answer, so its prompt counts a little
longer than its prefill took), and the request leaves at its end. A retry inside the
group (Envoy's) changes nothing here: it is still one request on that group.

Each safety filter process sees only its share of the requests (Envoy spreads ext_proc
streams over the processes), so a process scales its own counts by `views`, the number of
processes live now (safety_filter.picker_roster), to estimate each group's whole queue
(frugal bench routing-virtual models this view, `adaptive+picker/2`).

The lines are the control plane's (frugal.group_lines_store), set here once a second with
the views; a model without lines is not picked for, and its requests go by the route
weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from frugal.group_picker import ModelPicker, pick_group

Slot = tuple[str, str]  # (model, group)


def _checked_views(views: int) -> int:
    if views < 1:
        raise ValueError("views: at least this process")
    return views


class GroupTally:
    """One process's counts per (model, group), and the pickers it picks with."""

    def __init__(self, views: int = 1) -> None:
        self._views = _checked_views(views)
        self._pickers: dict[str, ModelPicker] = {}
        self._in_flight: Counter[Slot] = Counter()
        self._awaiting: Counter[Slot] = Counter()

    def set_pickers(self, pickers: Mapping[str, ModelPicker]) -> None:
        """The models' lines as the control plane published them (none: pick for none)."""
        self._pickers = dict(pickers)

    def set_views(self, views: int) -> None:
        """How many processes share the requests now, this one included."""
        self._views = _checked_views(views)

    @property
    def views(self) -> int:
        return self._views

    def pick(self, model: str, prompt_tokens: int) -> GroupTicket | None:
        """The group for one request of `prompt_tokens` (estimated) of `model`, counted
        from now; None when the model has no lines or no group serves."""
        picker = self._pickers.get(model)
        if picker is None:
            return None
        views = self._views
        queue = {
            group: (self._in_flight[(model, group)] * views, self._awaiting[(model, group)] * views)
            for group in picker.groups
        }
        group = pick_group(picker.candidates(queue), prompt_tokens, picker.config)
        if group is None:
            return None
        slot = (model, group)
        self._in_flight[slot] += 1
        self._awaiting[slot] += prompt_tokens
        return GroupTicket(self, slot, prompt_tokens)

    def counts(self) -> dict[Slot, tuple[int, int]]:
        """This process's own counts: (in flight, awaiting tokens) by (model, group); slots
        with neither are left out."""
        slots = sorted(set(self._in_flight) | set(self._awaiting))
        return {slot: (self._in_flight[slot], self._awaiting[slot]) for slot in slots}

    def _first_token(self, slot: Slot, tokens: int) -> None:
        _take(self._awaiting, slot, tokens)

    def _finished(self, slot: Slot) -> None:
        _take(self._in_flight, slot, 1)


def _take(counts: Counter[Slot], slot: Slot, amount: int) -> None:
    """Subtract, and drop the slot at zero (no slot outlives its requests)."""
    left = counts[slot] - amount
    if left > 0:
        counts[slot] = left
    else:
        del counts[slot]


class GroupTicket:
    """One request's place in the tally; each step counts once, whatever calls it again."""

    def __init__(self, tally: GroupTally, slot: Slot, prompt_tokens: int) -> None:
        self._tally = tally
        self._slot = slot
        self._prompt_tokens = prompt_tokens
        self._awaiting = True
        self._in_flight = True

    @property
    def group(self) -> str:
        return self._slot[1]

    def first_token(self) -> None:
        """Its first response headers came: its prompt is no longer in the group's queue."""
        if self._awaiting:
            self._awaiting = False
            self._tally._first_token(self._slot, self._prompt_tokens)

    def release(self) -> None:
        """Its stream ended: it leaves the group's count."""
        self.first_token()
        if self._in_flight:
            self._in_flight = False
            self._tally._finished(self._slot)
