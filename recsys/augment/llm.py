"""A chat-completions client for any OpenAI-compatible server (vLLM, llama.cpp, Ollama).

Built on the official `openai` client (the `[llm]` extra). Answers are cached on disk by a
hash of the request (model, messages, sampling settings; not the server address), so a rerun
costs no calls. The client retries connection errors, timeouts, 429 and 5xx answers with
exponential backoff (`max_retries`); requests run `concurrency` at a time. An answer that is
a refusal, or that the caller's parser rejects, is counted and skipped, never guessed at.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from tqdm.auto import tqdm

from recsys.atomic import write_text
from recsys.data.datasets import data_home
from recsys.env_settings import settings_from_env
from recsys.errors import RecsysError

ENV_PREFIX = "RECSYS_LLM_"
T = TypeVar("T")
Messages = list[dict[str, str]]
# a model that declines says so in its first words; such an answer is a refusal, not a parse error
REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry,|i can(no|')t|i am (not able|unable)|"
                     r"i'm (not able|unable)|as an ai)", re.IGNORECASE)


# the `recsys augment` flags of the settings that have one (the others come from variables)
FLAGS = {"base_url": "--llm-url", "model": "--llm-model", "concurrency": "--llm-concurrency",
         "max_tokens": "--llm-max-tokens", "structured": "--llm-structured",
         "cache_dir": "--llm-cache"}


class LLMSettings(BaseModel):
    """Where the server is and how to ask it; from arguments or RECSYS_LLM_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(description="model name the server knows")
    api_key: SecretStr = Field(SecretStr("none"), description="bearer token (local servers ignore it)")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(3, ge=0, description="retries with exponential backoff per request")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    temperature: float = Field(0.6, ge=0, description="sampling temperature (LLMRec: 0.6)")
    top_p: float = Field(0.1, gt=0, le=1, description="nucleus sampling mass (LLMRec: 0.1)")
    max_tokens: int = Field(128, ge=1, description="most tokens per answer")
    structured: bool = Field(False, description="ask for JSON matching the task's schema "
                             "(response_format json_schema: vLLM, llama.cpp, Ollama, OpenAI)")
    cache_dir: str | None = Field(None, description="answer cache (default: "
                                  "$RECSYS_DATA_HOME/llm-answers)")

    @classmethod
    def from_env(cls, **overrides: Any) -> LLMSettings:
        """Settings from RECSYS_LLM_<FIELD> variables, overridden by non-None `overrides`."""
        return settings_from_env(cls, ENV_PREFIX, "LLM setting", overrides, FLAGS)


@dataclass
class AskStats:
    """What one `ask` cost and how many answers were usable."""

    prompts: int = 0
    calls: int = 0            # requests sent to the server (cache misses)
    cached: int = 0           # answers read from the cache
    parse_failures: int = 0   # answers the parser rejected
    refusals: int = 0         # answers declining the task
    errors: int = 0           # requests that failed after all retries
    seconds: float = 0.0

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def parse_failure_rate(self) -> float:
        answered = self.prompts - self.errors
        return (self.parse_failures + self.refusals) / answered if answered else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "calls_per_second": round(self.calls_per_second, 3),
                "parse_failure_rate": round(self.parse_failure_rate, 4)}


def load_prompt(name: str) -> tuple[string.Template, string.Template]:
    """The (system, user) templates of prompt `name` from recsys/augment/prompts/NAME.txt.

    The file holds the system text, a line `---`, then the user text; `$field` placeholders
    are filled by `render`.
    """
    try:
        text = resources.files("recsys.augment").joinpath("prompts", f"{name}.txt").read_text()
    except FileNotFoundError:
        raise RecsysError(f"no prompt template {name!r}") from None
    system, sep, user = text.partition("\n---\n")
    if not sep:
        raise RecsysError(f"prompt template {name!r} has no '---' line between system and user text")
    return string.Template(system.strip()), string.Template(user.strip())


def render(name: str, **fields: Any) -> Messages:
    """Chat messages for prompt template `name` with its placeholders filled."""
    system, user = load_prompt(name)
    try:
        return [{"role": "system", "content": system.substitute(fields)},
                {"role": "user", "content": user.substitute(fields)}]
    except KeyError as exc:
        raise RecsysError(f"prompt template {name!r} needs field {exc.args[0]!r}") from None


class LLMClient:
    """Sends chat requests to one server and model, with a disk cache of the answers."""

    def __init__(self, settings: LLMSettings, *, progress: bool = True) -> None:
        try:
            import openai
        except ImportError:
            raise RecsysError("the LLM client needs the openai package: pip install 'recsys[llm]'") from None
        self.settings = settings
        self.progress = progress
        self.cache_dir = Path(settings.cache_dir) if settings.cache_dir else data_home() / "llm-answers"
        self._openai = openai
        self._client = openai.OpenAI(base_url=settings.base_url,
                                     api_key=settings.api_key.get_secret_value(),
                                     timeout=settings.timeout, max_retries=settings.max_retries)

    def _request(self, messages: Messages, schema: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        request = {"model": s.model, "messages": messages, "temperature": s.temperature,
                   "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.structured and schema is not None:
            request["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": schema, "strict": True}}
        return request

    def _cache_file(self, request: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request; the answer's text and whether the server flagged it as a refusal."""
        response = self._client.chat.completions.create(**request)
        choice = response.choices[0]
        message = choice.message
        return {"content": message.content or "",
                "refusal": bool(getattr(message, "refusal", None))
                or choice.finish_reason == "content_filter"}

    def _check_server(self) -> None:
        try:
            self._client.with_options(max_retries=0).models.list()
        except self._openai.APIConnectionError as exc:
            raise RecsysError(f"cannot reach the LLM server at {self.settings.base_url}: {exc}") from None
        except self._openai.APIStatusError:
            pass  # some servers do not list models; the chat requests will tell

    def ask(self, prompts: Sequence[Messages], parse: Callable[[str], T | None], *,
            schema: dict[str, Any] | None = None,
            desc: str = "llm") -> tuple[list[T | None], list[str | None], AskStats]:
        """Answer each prompt; returns (parsed answers, raw answers, stats), in prompt order.

        With `settings.structured`, the server is asked for JSON matching `schema` (a JSON
        Schema), which constrains the decoding of servers that support it.

        A parsed answer is None where the request failed, the model refused, or `parse`
        returned None; a raw answer is None only where the request failed.
        """
        stats = AskStats(prompts=len(prompts))
        raw: list[str | None] = [None] * len(prompts)
        flagged = [False] * len(prompts)
        requests = [self._request(m, schema) for m in prompts]
        todo = []
        for n, request in enumerate(requests):
            file = self._cache_file(request)
            if file.is_file():
                answer = json.loads(file.read_text())
                raw[n], flagged[n] = answer["content"], answer["refusal"]
                stats.cached += 1
            else:
                todo.append(n)
        start = time.perf_counter()
        if todo:
            self._check_server()
            first_error = None
            bar = tqdm(total=len(todo), desc=desc, unit="call", disable=not self.progress)
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                futures = {pool.submit(self._call, requests[n]): n for n in todo}
                for future in as_completed(futures):
                    n = futures[future]
                    stats.calls += 1
                    try:
                        answer = future.result()
                    except self._openai.OpenAIError as exc:
                        stats.errors += 1
                        first_error = first_error or exc
                    else:
                        write_text(self._cache_file(requests[n]),
                                   json.dumps({"request": requests[n], **answer}))
                        raw[n], flagged[n] = answer["content"], answer["refusal"]
                    bar.update()
                    bar.set_postfix(errors=stats.errors)
            bar.close()
            if stats.errors == len(todo):
                raise RecsysError(f"every LLM request failed; the first: {first_error}")
        stats.seconds = time.perf_counter() - start
        parsed: list[T | None] = [None] * len(prompts)
        for n, text in enumerate(raw):
            if text is None:
                continue
            if flagged[n] or REFUSAL.match(text):
                stats.refusals += 1
            elif (value := parse(text)) is None:
                stats.parse_failures += 1
            else:
                parsed[n] = value
        return parsed, raw, stats
