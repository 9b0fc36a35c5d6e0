"""Concurrent /recommend requests share one matrix product.

At 100K items a request is bound by reading the item factors once; scoring the users of all
requests waiting at that moment in one product reads them once for all. Nothing waits on a
timer: the batcher takes what has queued while the previous block was being scored, so a
lone request is answered at once and a busy server batches by itself.
"""

import asyncio
from itertools import groupby

from serving.engine import Engine, Query, Ranked


class RecommendBatcher:
    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue
        self.task: asyncio.Task | None = None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def recommend(self, engine: Engine, query: Query) -> Ranked:
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.task is None or self.task.done():
            # a queue belongs to one event loop: (re)start on the loop that serves now
            self.loop, self.queue = loop, asyncio.Queue()
            self.task = loop.create_task(self._run())
        future = loop.create_future()
        self.queue.put_nowait((engine, query, future))
        return await future

    async def _run(self) -> None:
        batch: list = []
        try:
            while True:
                batch = [await self.queue.get()]
                await asyncio.sleep(0)  # let requests that arrived together reach the queue
                while len(batch) < self.max_batch and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                self._answer(batch)
                batch = []
        finally:  # cancelled (shutdown): nobody waits forever
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            for *_, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the server is shutting down"))

    @staticmethod
    def _answer(batch: list) -> None:
        # one product per engine: a reload may swap the engine between two requests
        for engine, group in groupby(batch, key=lambda item: item[0]):
            group = [item for item in group if not item[2].done()]
            try:
                answers = engine.recommend_each([query for _, query, _ in group])
            except Exception as exc:  # noqa: BLE001 (the requests get the error, the loop goes on)
                for *_, future in group:
                    future.set_exception(exc)
                continue
            for (*_, future), answer in zip(group, answers, strict=True):
                future.set_result(answer)
