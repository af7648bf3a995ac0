"""Packed sampling: the noisy generations of many items share each generator call (issue 13).

A part that samples (a certifier, an aggregator) is written as a *sampling program*: a Python generator
that yields `Draw` requests and is sent `Samples` back, and returns its row columns:

    def certify_program(self, ctx):
        selection = yield Draw("certify", self.n0)            # class counts of n0 noisy generations
        c_a = int(class_counts(ctx, selection).argmax())
        estimation = yield Draw("certify", self.n)
        return {...}

A program may also yield a tuple of Draws: requests that do not depend on each other's samples (the n0
selection and the n estimation samples of CERTIFY, or the baseline generation beside them). They share
generator calls, and the program is sent the tuple of their Samples once all are drawn. Requests of one
stream are drawn in the order given. `alongside` runs a draw together with another program's first
request, so that an item's whole work can be a single round of calls.

`run_programs` runs the programs of many items together. It keeps the undecided items' open requests in
a queue and fills every generator call, up to the batch size, with rows from as many of them as fit,
oldest request first, so every item advances (the pool of undecided items of Voracek's
confidence-sequence code, here over requests of any size). The oracle labels the packed batch in one
call. Each request's rows come from its own item's streams (`ItemContext.stream`: the noise in fixed
chunks, the generator's randomness one seed per row), so a program is sent the same samples whether it
runs alone (`run_one`: the per-item path) or packed, at any batch size: rows are identical.

Items pack when their conditions have one shape (prompt embeddings of one encoder, images of one size)
or, for a model with `pack_shape` (a language model: prompts of different token lengths), one padded
shape, and one `pack_key` where the item's model has one (a VLM's bound prompt); a batch is filled from
the requests whose shape and key match the oldest one's, and runs on that request's model.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from smoothgen_exp.seeding import row_seeds


@dataclass(frozen=True)
class Draw:
    """A request: `num` generations of the item's stream `stream` (noise and generator seeds both
    continue where the stream's previous request stopped)."""

    stream: str
    num: int
    outputs: bool = False    # hand back the generations too (held in memory: keep num to a batch)
    classify: bool = True    # hand back the oracle's per-class counts (streamed: no label is kept)
    votes: bool = False      # and each label, in draw order (held in memory: keep num small)
    noisy: bool = True       # False: at the clean condition itself (the baseline generation)
    firsts: bool = False     # hand back the first generation of each class (what `majority` shows)
    phase: str | None = None  # the timing phase its rows' share of a call goes to (default: the item's)


@dataclass
class Samples:
    labels: torch.Tensor | None          # [num] int64 on the CPU, in draw order, when asked for (`votes`)
    outputs: Any = None                  # [num, ...] tensor or a list (text), when asked for
    firsts: dict | None = None           # {class: its first generation}, when asked for
    counts: torch.Tensor | None = None   # [classes] int64 on the CPU: the labels' per-class counts

    @classmethod
    def of_labels(cls, draw: Draw, labels: torch.Tensor) -> Samples:
        """What `run_programs` sends a request `draw` whose samples have these labels (scripted votes): their
        counts, and the labels themselves only where the draw asks for them (`votes`)."""
        return cls(labels if draw.votes else None, counts=torch.bincount(labels.reshape(-1)))


Program = Generator[Draw, Samples, Any]


def direct(fn, ctx) -> Program:
    """A program that samples on its own (no requests): how a part without a packed program runs."""
    return fn(ctx)
    yield  # unreachable: makes this function a generator


def resume(program: Program, value) -> Program:
    """Continue `program` from its current request, sent `value`; returns its return value."""
    while True:
        try:
            request = program.send(value)
        except StopIteration as stop:
            return stop.value
        value = yield request


def alongside(draw: Draw, program: Program) -> Program:
    """(draw's Samples, program's return value): `draw` requested together with the program's first
    request, in the same generator calls, instead of a round of calls of its own."""
    try:
        first = next(program)
    except StopIteration as stop:
        return (yield draw), stop.value
    together = first if isinstance(first, tuple) else (first,)
    got = yield (draw, *together)
    result = yield from resume(program, got[1:] if isinstance(first, tuple) else got[1])
    return got[0], result


def program_of(part, method: str, ctx) -> Program:
    """`part`'s sampling program for `method` (its `<method>_program`), else one that calls `method`."""
    program = getattr(part, f"{method}_program", None)
    return program(ctx) if program is not None else direct(getattr(part, method), ctx)


def class_counts(ctx, samples: Samples) -> torch.Tensor:
    """Per-class vote counts [num_classes] of a request."""
    counts = samples.counts if samples.counts is not None else torch.bincount(samples.labels.reshape(-1))
    return _checked(counts, ctx.num_classes)


def votes_for(samples: Samples, c: int) -> int:
    """How many of a request's labels are class c."""
    counts = samples.counts if samples.counts is not None else torch.bincount(samples.labels.reshape(-1))
    return int(counts[c]) if 0 <= c < len(counts) else 0


def _checked(counts: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """counts padded to num_classes entries; a class index beyond them is the oracle's error."""
    if num_classes is None:
        return counts
    if counts.numel() > num_classes:
        raise ValueError(f"the oracle returned a class index >= num_classes={num_classes}")
    return F.pad(counts, (0, num_classes - counts.numel()))


def output_batches(num: int, batch_size: int, stream: str, classify: bool = True) -> Iterator[Draw]:
    """Requests for `num` generations with their outputs, in pieces of at most `batch_size` (streamed:
    the caller sends each piece's Samples back and keeps what it needs)."""
    for start in range(0, num, batch_size):
        yield Draw(stream, min(batch_size, num - start), outputs=True, classify=classify)


class _Group:
    """The requests a program yielded together (`several`: as a tuple), and how many are still open."""

    __slots__ = ("requests", "several", "open")

    def __init__(self, requests: list, several: bool):
        self.requests, self.several, self.open = requests, several, len(requests)


class _Open:
    """An open request of job `job`: rows still to draw, and the parts received so far. `group` holds
    the requests the job yielded together (one, or a tuple)."""

    __slots__ = ("job", "draw", "phase", "remaining", "labels", "counts", "outputs", "firsts", "group")

    def __init__(self, job: int, draw: Draw, phase: str):
        if not isinstance(draw, Draw) or draw.num <= 0:
            raise ValueError(f"a program yielded {draw!r}: expected a Draw of at least one sample, or a tuple of them")
        self.job, self.draw, self.remaining = job, draw, draw.num
        self.phase = draw.phase or phase
        self.labels: list = []
        self.counts: torch.Tensor | None = None
        self.outputs: list = []
        self.firsts: dict = {}
        self.group: _Group | None = None

    def samples(self) -> Samples:
        return Samples(_cat(self.labels), _cat(self.outputs), self.firsts if self.draw.firsts else None, self.counts)

    def count(self, labels: torch.Tensor, num_classes: int | None) -> None:
        """Add a part's labels to the per-class counts (and keep them, for `votes`)."""
        counts = _checked(torch.bincount(labels, minlength=num_classes or 0), num_classes)
        if self.counts is not None:            # without num_classes the parts' lengths differ: pad to the longer
            size = max(len(self.counts), len(counts))
            counts = F.pad(counts, (0, size - len(counts))) + F.pad(self.counts, (0, size - len(self.counts)))
        self.counts = counts
        if self.draw.votes:
            self.labels.append(labels)

    def keep_firsts(self, labels: torch.Tensor, outputs) -> None:
        for c in labels.unique().tolist():
            if c not in self.firsts:
                out = outputs[int((labels == c).nonzero()[0])]
                self.firsts[c] = out.detach().cpu().clone() if torch.is_tensor(out) else out


def _cat(parts: list):
    if not parts:
        return None
    if torch.is_tensor(parts[0]):
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    return [row for part in parts for row in part]


def run_one(ctx, program: Program):
    """The per-item path: one program on its own."""
    return run_programs([(ctx, program)])[0]


def run_programs(jobs: Sequence[tuple[Any, Program]], batch_size: int | None = None) -> list:
    """Run every (ItemContext, program) pair to completion; returns their return values in order.

    Every context must share one model (up to its bound prompt) and oracle. Seconds are credited to each
    context's current `phase` (`ctx.timings`): its programs' own work, and its rows' share of every
    generator call.
    """
    if not jobs:
        return []
    first = jobs[0][0]
    oracle = first.oracle
    num_classes = getattr(oracle, "num_classes", None)
    batch_size = int(batch_size or first.batch_size)
    results: list = [None] * len(jobs)
    queue: deque[_Open] = deque()

    def advance(j: int, value) -> None:
        ctx, program = jobs[j]
        t0 = time.perf_counter()
        try:
            draw = program.send(value)
        except StopIteration as stop:
            results[j] = stop.value
        else:
            several = isinstance(draw, tuple)
            group = _Group([_Open(j, d, ctx.phase) for d in (draw if several else (draw,))], several)
            for req in group.requests:
                req.group = group
                queue.append(req)
        ctx.add_time(time.perf_counter() - t0)

    for j in range(len(jobs)):
        advance(j, None)
    while queue:
        t0 = time.perf_counter()
        model = jobs[queue[0].job][0].model              # the oldest request's (its prompt, for a VLM)
        taken, z, seeds = _fill(queue, jobs, batch_size)
        outputs = model.generate(z, seeds)
        wanted = any(req.draw.classify or req.draw.firsts for req, _ in taken)
        labels = oracle.classify(outputs).reshape(-1).cpu() if wanted else None
        share = (time.perf_counter() - t0) / len(z)
        start = 0
        for req, k in taken:
            if req.draw.classify:
                req.count(labels[start:start + k], num_classes)
            if req.draw.outputs:
                req.outputs.append(outputs[start:start + k])
            if req.draw.firsts:
                req.keep_firsts(labels[start:start + k], outputs[start:start + k])
            start += k
            req.remaining -= k
            jobs[req.job][0].add_time(share * k, req.phase)
        for req, _ in taken:
            if req.remaining == 0:
                queue.remove(req)
                group = req.group
                group.open -= 1
                if group.open == 0:
                    got = tuple(r.samples() for r in group.requests)
                    advance(req.job, got if group.several else got[0])
    return results


def _pack_shape(model, x: torch.Tensor) -> tuple[int, ...]:
    """The shape x takes in a generator call: its own, or the model's padded bucket (`pack_shape`:
    prompts of a language model, left-padded with NaN rows up to a multiple of a token count)."""
    pack_shape = getattr(model, "pack_shape", None)
    return tuple(pack_shape(tuple(x.shape))) if pack_shape is not None else tuple(x.shape)


def _fill(queue: deque[_Open], jobs, batch_size: int) -> tuple[list[tuple[_Open, int]], torch.Tensor, torch.Tensor]:
    """One generator call's rows: [(request, rows)], the conditions and the seeds; oldest request first,
    all of the oldest request's packed shape (a shorter condition is right-aligned after NaN rows)."""
    model = jobs[queue[0].job][0].model
    x0 = jobs[queue[0].job][0].x
    shape, key = _pack_shape(model, x0), getattr(model, "pack_key", None)
    room, taken = batch_size, []
    for req in queue:
        if room == 0:
            break
        ctx = jobs[req.job][0]
        if _pack_shape(model, ctx.x) == shape and getattr(ctx.model, "pack_key", None) == key:
            k = min(req.remaining, room)
            taken.append((req, k))
            room -= k
    z = torch.empty((batch_size - room, *shape), dtype=x0.dtype, device=x0.device)
    seeds, start = [], 0
    for req, k in taken:
        ctx = jobs[req.job][0]
        stream = ctx.stream(req.draw.stream)
        pad = shape[0] - ctx.x.shape[0]
        if pad:
            z[start:start + k, :pad] = float("nan")
        rows = z[start:start + k, pad:]
        if req.draw.noisy:
            stream.noise.take_(rows)
        else:
            rows[:] = ctx.x
        seeds.append(row_seeds(stream.model_gen, k))
        start += k
    return taken, z, torch.cat(seeds) if len(seeds) > 1 else seeds[0]
