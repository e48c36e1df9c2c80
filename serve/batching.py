"""Micro-batching: concurrent requests share one forward pass.

While one forward pass runs, new requests queue; the next pass takes all of them (up to
`max_batch` texts, optionally waiting `max_wait_ms` for more), runs in a worker thread (the
event loop never blocks on tokenization or inference), and answers each request with its own
rows. Under heavy load (the last pass at least half full) a pass waits up to `fill_wait_ms` for
the batch to fill; a lone request never waits. The queue is bounded: a full queue is
`Overloaded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import Histogram

from nlu.inference.parser import Parser
from nlu.result import ParseOptions, ParseResult
from nlu.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    pass


class InferenceFailed(RuntimeError):
    """Inference failed for this request alone (its batch-mates were answered)."""


@dataclass
class _Job:
    texts: list[str]
    options: ParseOptions
    future: asyncio.Future[list[ParseResult]] = field(repr=False)


class MicroBatcher:
    """Collect concurrent requests into one forward pass; bounded queue, one worker thread."""

    def __init__(
        self,
        parser: Parser,
        settings: ServeSettings,
        *,
        batch_sizes: Histogram,
    ) -> None:
        self.parser = parser
        self.max_batch = settings.max_batch
        self.max_wait = settings.max_wait_ms / 1000
        self.fill_wait = settings.fill_wait_ms / 1000
        self.max_queue = settings.max_queue
        self.batch_sizes = batch_sizes
        self.queue: asyncio.Queue[_Job] | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Made per start, not per instance: an app can run its lifespan more than once (a test
        # client opened twice), each time on a new event loop, and a shut-down executor accepts
        # no work. One thread: inference already uses every core; more would only contend.
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-infer")
        self.task = asyncio.get_running_loop().create_task(self._run(self.queue, self.executor))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], options: ParseOptions) -> list[ParseResult]:
        if self.queue is None:
            raise RuntimeError("the batcher is not running: start() it in the app's lifespan")
        future: asyncio.Future[list[ParseResult]] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(texts, options, future))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await future

    async def _run(self, queue: asyncio.Queue[_Job], executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        last = 0  # texts in the previous pass
        while True:
            jobs = [await queue.get()]
            size = len(jobs[0].texts)
            # Requests that arrived while the previous batch ran are already queued, so under
            # load batches form without any waiting; one yield lets handlers that are ready
            # enqueue too. An extra wait (max_wait_ms > 0) only trades latency for batch size.
            await asyncio.sleep(0)
            wait = self.max_wait
            if 2 * last >= self.max_batch:
                # Closed-loop clients under heavy load split into two groups that take turns,
                # each pass carrying half of them; the other half's next requests come back
                # within a few milliseconds of their answers. Waiting for them makes one full
                # pass instead of two half ones, which halved the 32-client p99
                # (benchmarks/results/studies/serving.md).
                wait = max(wait, self.fill_wait)
            deadline = loop.time() + wait
            while size < self.max_batch:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                jobs.append(job)
                size += len(job.texts)
            last = sum(len(job.texts) for job in jobs)
            self.batch_sizes.observe(last)
            try:
                await self._answer(jobs, loop, executor)
            except Exception as err:
                if len(jobs) == 1:
                    self._fail(jobs[0], err)
                    continue
                # One request can break a whole batch (a text the tokenizer cannot encode):
                # answer each request on its own, so only the one that fails gets an error.
                logger.warning("a batch of %d requests failed; retrying them one by one", len(jobs))
                for job in jobs:
                    try:
                        await self._answer([job], loop, executor)
                    except Exception as alone:
                        self._fail(job, alone)

    @staticmethod
    def _fail(job: _Job, err: Exception) -> None:
        # One line per failed request, no traceback: a client sending bad input repeatedly
        # must not flood the log.
        logger.error("inference failed for one request: %s: %s", type(err).__name__, err)
        if not job.future.done():
            job.future.set_exception(InferenceFailed(f"{type(err).__name__}: {err}"))

    async def _answer(
        self, jobs: list[_Job], loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor
    ) -> None:
        texts = [t for job in jobs for t in job.texts]
        options = [job.options for job in jobs for _ in job.texts]
        results = await loop.run_in_executor(
            executor,
            functools.partial(self.parser.parse_checked, texts, options, batch_size=len(texts)),
        )
        start = 0
        for job in jobs:
            if not job.future.done():  # the client may have gone away
                job.future.set_result(results[start : start + len(job.texts)])
            start += len(job.texts)
