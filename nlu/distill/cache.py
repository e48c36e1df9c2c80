"""Teachers' answers cached on disk per teacher, so a restart never asks a teacher twice; remote
teachers asked in batches with bounded retries."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from nlu.distill.answers import Answer, Teacher, TeacherConfig, TeacherError

logger = logging.getLogger(__name__)


# -- the answer cache ------------------------------------------------------------------------------


class AnswerCache:
    """A teacher's answers on disk, one JSON line per text, appended as they arrive: a killed
    run keeps every answer written so far, and the next run asks only for the rest."""

    def __init__(self, directory: Path, config: TeacherConfig) -> None:
        digest = hashlib.sha256(config.source().encode()).hexdigest()[:10]
        self.path = directory / f"{config.name}-{digest}.jsonl"
        self.answers: dict[str, Answer] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        good = 0  # bytes of whole records
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                self.answers[row["text"]] = Answer.from_json(row["answer"])
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    # The line a killed run was writing: cut it off, its text is asked again.
                    logger.warning("%s: dropping an unfinished last line", self.path)
                    with self.path.open("r+b") as handle:
                        handle.truncate(good)
                    break
                raise TeacherError(
                    f"{self.path}:{number}: not a cached answer; delete the file to ask the "
                    "teacher again"
                ) from None
            good += len(line) + 1

    def missing(self, texts: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self.answers))

    def add(self, texts: Sequence[str], answers: Sequence[Answer]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for text, answer in zip(texts, answers, strict=True):
                handle.write(json.dumps({"text": text, "answer": answer.to_json()}) + "\n")
                self.answers[text] = answer


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + size])


def _with_retries(teacher: Teacher, texts: list[str]) -> list[Answer]:
    config = teacher.config
    last = ""
    for attempt in range(config.retries + 1):
        try:
            answers = teacher.ask(texts)
            if len(answers) != len(texts):
                raise TeacherError(f"{len(answers)} answers for {len(texts)} texts")
            return answers
        except (OSError, TimeoutError, urllib.error.URLError, ValueError, TeacherError) as err:
            last = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            if attempt < config.retries:
                delay = min(0.25 * 2**attempt, 5.0)
                logger.warning(
                    "teacher %s: %s; retrying in %.2f s (%d/%d)",
                    teacher.name,
                    last,
                    delay,
                    attempt + 1,
                    config.retries,
                )
                time.sleep(delay)
    raise TeacherError(
        f"teacher {teacher.name} ({config.source()}) failed {config.retries + 1} times on a batch "
        f"of {len(texts)} texts (first: {texts[0]!r}): {last}. The answers so far are kept; fix "
        "the teacher and run again to resume"
    )


def ask_all(teacher: Teacher, texts: Sequence[str], cache_dir: Path) -> dict[str, Answer]:
    """The teacher's answers to `texts`, from the cache where it has them, else asked in
    batches (remote teachers `concurrency` batches at a time) and cached as they come."""
    cache = AnswerCache(cache_dir, teacher.config)
    todo = cache.missing(texts)
    if todo:
        logger.info(
            "teacher %s: %d texts to ask (%d cached)", teacher.name, len(todo), len(cache.answers)
        )
    started = time.perf_counter()
    batches = list(_chunks(todo, teacher.config.batch_size))
    if teacher.remote and teacher.config.concurrency > 1:
        with ThreadPoolExecutor(max_workers=teacher.config.concurrency) as pool:
            futures = {pool.submit(_with_retries, teacher, b): b for b in batches}
            try:
                for future in as_completed(futures):
                    cache.add(futures[future], future.result())
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
    else:
        for batch in batches:
            cache.add(batch, _with_retries(teacher, batch))
    if todo:
        logger.info(
            "teacher %s: %d answers in %.1f s",
            teacher.name,
            len(todo),
            time.perf_counter() - started,
        )
    return {t: cache.answers[t] for t in texts}
