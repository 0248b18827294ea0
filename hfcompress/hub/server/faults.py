"""Fault injection for reliability tests (``--fail-nth``, ``--drop-nth``, ``--cut-nth``, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def parse_nth(spec: str | list | None, flag: str = "--fail-nth") -> set[int]:
    """``"3"``, ``"3,5"``, ``"2-4,9"`` (or a list of ints) -> a set of 1-based request numbers."""
    if spec is None or spec == "":
        return set()
    items = spec if isinstance(spec, list) else str(spec).split(",")
    out: set[int] = set()
    try:
        for item in items:
            if isinstance(item, int):
                out.add(item)
                continue
            item = item.strip()
            if not item:
                continue
            lo, _, hi = item.partition("-")
            out.update(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ValueError(f"{flag} expects request numbers like 3, 3,5 or 2-4, got {spec!r}") from None
    if any(n < 1 for n in out):
        raise ValueError(f"{flag}: request numbers start at 1, got {spec!r}")
    return out


@dataclass
class Faults:
    """Fault injection for reliability tests (see ``docs/HUB.md``).

    Requests are numbered from 1; with ``match`` (a regex searched in ``"METHOD /path"``)
    only matching requests are numbered (and can fail). For the numbered request N:
    ``fail`` answers ``fail_status``; ``drop`` closes the connection without an answer;
    ``cut`` answers but closes the connection half-way through the body (an interrupted
    download); ``delay`` sleeps ``delay_ms`` first (every numbered request when ``delay`` is
    empty and ``delay_ms`` > 0). ``injected`` counts what was done.
    """

    match: str | None = None
    fail: set[int] = field(default_factory=set)
    fail_status: int = 503
    drop: set[int] = field(default_factory=set)
    cut: set[int] = field(default_factory=set)
    delay: set[int] = field(default_factory=set)
    delay_ms: float = 0.0
    counter: int = 0
    injected: dict[str, int] = field(default_factory=lambda: {"fail": 0, "drop": 0, "cut": 0, "delay": 0})

    @classmethod
    def from_dict(cls, d: dict) -> Faults:
        known = {"match", "fail_nth", "fail_status", "drop_nth", "cut_nth", "delay_nth", "delay_ms"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}: use {sorted(known)}")
        match = d.get("match") or None
        if match is not None:
            re.compile(match)
        status = int(d.get("fail_status") or 503)
        if not 400 <= status <= 599:
            raise ValueError(f"fail_status must be an HTTP error status (400-599), got {status}")
        return cls(match=match, fail=parse_nth(d.get("fail_nth"), "fail_nth"), fail_status=status,
                   drop=parse_nth(d.get("drop_nth"), "drop_nth"), cut=parse_nth(d.get("cut_nth"), "cut_nth"),
                   delay=parse_nth(d.get("delay_nth"), "delay_nth"), delay_ms=float(d.get("delay_ms") or 0.0))

    def to_dict(self) -> dict:
        return {"match": self.match, "fail_nth": sorted(self.fail), "fail_status": self.fail_status,
                "drop_nth": sorted(self.drop), "cut_nth": sorted(self.cut), "delay_nth": sorted(self.delay),
                "delay_ms": self.delay_ms, "counter": self.counter, "injected": dict(self.injected)}

    def decide(self, request_line: str) -> tuple[int, str | None, float]:
        """``(n, action, delay_s)`` for this request (``n`` = 0 when it is not numbered)."""
        if self.match and not re.search(self.match, request_line):
            return 0, None, 0.0
        self.counter += 1
        n = self.counter
        delay = self.delay_ms / 1000.0 if (n in self.delay or (not self.delay and self.delay_ms > 0)) else 0.0
        if delay:
            self.injected["delay"] += 1
        for action, nth in (("fail", self.fail), ("drop", self.drop), ("cut", self.cut)):
            if n in nth:
                self.injected[action] += 1
                return n, action, delay
        return n, None, delay
