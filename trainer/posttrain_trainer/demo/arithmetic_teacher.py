"""A rule-based arithmetic teacher behind the OpenAI chat protocol: a demonstration stand-in for a teacher LLM.

The CPU quickstart has no model that can evolve, answer or rank instructions (none fits a 2-core CPU
without downloads), so it serves this program instead. It is not a language model and says nothing
about what an LLM would do; it lets the recipe's data flow be shown end to end on data whose answers
can be checked. `hack/quickstart.sh --teacher URL MODEL` replaces it (and the verifier judge) with a
real OpenAI-compatible endpoint.

It reads the requests the evol and align workloads send (recognised by their prompts' fixed wording)
and answers in the formats those workloads parse:

- evolve (in-depth, in-breadth, downward): makes the sum harder (one more term, or asking for the
  steps in the step format, `common.steps.STEP_FORMAT`), writes a new one of the same size, or drops a
  term;
- answer: worked steps, one equation per line, then "The answer is N.";
- equality (elimination rule 1), answer scores and improvements (Evol-Answer), difficulty ratings,
  and rankings of instruction variants (IRM data: well-defined, checkable tasks first);
- as a judge (an endpoint standing in for one, e.g. to try `--teacher` locally): battle verdicts,
  rankings of answers and step labels, by checking the sums as the verifier does.

It fails on purpose, at fixed rates chosen by a hash of the request, in the ways Evol-Instruct's
elimination rules catch: it returns an evolution with no new requirement (`noInformationGain`, about
1 in 8), copies the template's label (`templateLeak`, 1 in 10), refuses to answer ("Sorry ...",
`refusal`, 1 in 12) or answers with stop words only (`stopwordsOnly`, 1 in 12). Anything else it is
asked gets a refusal.

    python -m posttrain_trainer.demo.arithmetic_teacher --port 8000   # serves until stopped

Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from posttrain_trainer.common.steps import STEP_FORMAT, step_prompt
from posttrain_trainer.common.verify import AnswerVerifier, evaluate, symbols

MAX_TERMS = 4
"""Longest sum the teacher evolves to (a longer one would not fit the quickstart's tiny student)."""
_VERIFIER = AnswerVerifier("arithmetic")
_TERMS = re.compile(r"\d+(?:\s*[+]\s*\d+)+")
_FILLER = "Please answer this: "


@dataclass
class Problem:
    """A sum of whole numbers, and whether the worked steps are asked for."""

    terms: list[int]
    steps: bool = False
    filler: bool = False
    extras: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, text: str) -> Problem | None:
        """The sum an instruction states, or None when it states none."""
        found = [m.group(0) for m in _TERMS.finditer(symbols(text.replace(STEP_FORMAT, " ")))]
        if not found:
            return None
        longest = max(found, key=len)
        terms = [int(t) for t in re.findall(r"\d+", longest)]
        return cls(terms, steps="step" in text.lower(), filler=text.startswith(_FILLER))

    def text(self) -> str:
        """The instruction."""
        words = " plus ".join(str(t) for t in self.terms)
        question = f"What is {words}?"
        if self.filler:
            question = _FILLER + question[0].lower() + question[1:]
        # Asking for the steps is asking in the step format RLEIF and the PRM's data use.
        return step_prompt(question) if self.steps else question

    def answer(self) -> str:
        """Worked steps: one addition per line, then the answer."""
        lines, total = [], self.terms[0]
        for term in self.terms[1:]:
            lines.append(f"{total} + {term} = {total + term}.")
            total += term
        lines.append(f"The answer is {total}.")
        return "\n".join(f"Step {n}: {line}" for n, line in enumerate(lines, 1))


def _draw(*parts: str) -> random.Random:
    """A random generator fixed by the request: the same request always gets the same reply."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _between(text: str, start: str, end: str) -> str:
    """The text after the last `start` and before the next `end` (or the end)."""
    tail = text.rsplit(start, 1)[-1]
    return tail.split(end, 1)[0].strip()


def evolve(instruction: str, method: str, downward: bool, breadth: bool) -> str:
    """The evolved instruction (or, at the fixed failure rates, a failed evolution)."""
    problem = Problem.read(instruction)
    draw = _draw("evolve", instruction, method)
    roll = draw.random()
    if problem is None:
        return instruction
    if roll < 0.125:  # no new requirement: the same task, reworded
        problem.filler = not problem.filler
        return problem.text()
    if roll < 0.225:  # copies the template's label
        return "#Rewritten Instruction#: " + problem.text()
    problem.filler = False
    if downward:
        if len(problem.terms) > 2:
            problem.terms.pop()
        else:
            problem.terms = [max(1, t // 2) for t in problem.terms]
        problem.steps = False
    elif breadth:
        problem.terms = [draw.randint(1, 9) for _ in problem.terms]
    elif "multiple" in method and not problem.steps:
        problem.steps = True
    elif len(problem.terms) < MAX_TERMS:
        problem.terms.append(draw.randint(1, 9))
    else:
        problem.steps = True
    return problem.text()


def answer(question: str) -> str:
    """Worked steps for a sum (or, at the fixed failure rates, a refusal or an empty reply)."""
    problem = Problem.read(question)
    if problem is None:
        return "Sorry, I can only help with sums of whole numbers."
    roll = _draw("answer", question).random()
    if roll < 1 / 12:
        return "Sorry, I cannot work that one out."
    if roll < 2 / 12:
        return "Well, it is what it is."
    return problem.answer()


def quality(instruction: str) -> tuple[int, int]:
    """How good an instruction is as a task (higher is better): definition, precision, integrity.

    A sum the teacher can read and check is well defined; the template's labels and filler words
    make it less precise; asking for the steps makes it complete. Ties go to the shorter text.
    """
    points = 0
    problem = Problem.read(instruction)
    if problem is not None and evaluate(" + ".join(map(str, problem.terms))) is not None:
        points += 4
    if "#" in instruction or "instruction" in instruction.lower():
        points -= 3
    if instruction.startswith(_FILLER):
        points -= 1
    if problem is not None and problem.steps:
        points += 1
    return points, -len(instruction)


def _listing(text: str) -> list[str]:
    """The numbered items `[1]`, `[2]`, ... of a ranking request, in order."""
    parts = re.split(r"^\[(\d+)\]\n", text, flags=re.MULTILINE)
    items = []
    for index in range(1, len(parts) - 1, 2):
        body = parts[index + 1]
        items.append(body.split("\n\nReply with", 1)[0].strip())
    return items


def judge(text: str) -> str | None:
    """A judge's reply to the align workload's judging requests (battles, rankings, step labels)."""
    if "[Answer of Assistant A]" in text:
        question = _between(text, "[User's last message]\n", "\n\n[Answer of Assistant A]")
        first = _between(text, "[Answer of Assistant A]\n", "\n\n[Answer of Assistant B]")
        second = _between(text, "[Answer of Assistant B]\n", "\n\nJudge both")
        a, b = _VERIFIER.score(question, first), _VERIFIER.score(question, second)
        return "I checked both sums." + (f"\nScores: A={a}, B={b}" if a and b else "")
    if "[Answer 1]" in text:
        question = _between(text, "[User's last message]\n", "\n\n[Answer 1]")
        answers = [
            m.strip() for m in re.split(r"\n\n\[Answer \d+\]\n", "\n\n" + text.split("\n\n[Answer 1]", 1)[1])
        ]
        answers = [a.split("\n\nRank the", 1)[0] for a in answers if a]
        scores = [_VERIFIER.score(question, a) or 0 for a in answers]
        order = sorted(range(len(answers)), key=lambda i: -scores[i])
        return "Ranking: " + " > ".join(f"[{i + 1}]" for i in order)
    if "[Solution, step by step]" in text:
        question = _between(text, "[Problem]\n", "\n\n[Solution, step by step]")
        steps = _between(text, "[Solution, step by step]\n", "\n\nCheck every step").splitlines()
        labels = _VERIFIER.label_steps(question, steps) or [0] * len(steps)
        return "\n".join(f"Step {n}: {'correct' if ok else 'incorrect'}" for n, ok in enumerate(labels, 1))
    return None


def reply(messages: list[dict[str, Any]]) -> str:
    """The teacher's reply to a chat request."""
    text = str(messages[-1].get("content", "")) if messages else ""
    judged = judge(text)
    if judged is not None:
        return judged
    if "#Original Instruction#" in text:
        instruction = _between(text, "#Original Instruction#", "\n\nReply with")
        method = text.split("How to make it more difficult:", 1)[-1].split("\n", 1)[0]
        return evolve(instruction, method, "easier version" in text, "#New Instruction#" in text)
    if "Equal or Different" in text:
        first = _between(text, "First instruction:", "\n\nSecond instruction:")
        second = _between(text, "Second instruction:", "\n\nAnswer with")
        a, b = Problem.read(first), Problem.read(second)
        same = a is not None and b is not None and (a.terms, a.steps) == (b.terms, b.steps)
        return "Equal" if same or first.strip() == second.strip() else "Different"
    if text.startswith("Rank the instructions"):
        items = _listing(text)
        order = sorted(range(len(items)), key=lambda i: quality(items[i]), reverse=True)
        return "Ranking: " + " > ".join(str(i + 1) for i in order)
    if text.startswith("Review the answer"):
        instruction = _between(text, "Instruction:\n", "\n\nAnswer:")
        problem = Problem.read(instruction)
        if problem is None:
            return "Critique: I can only check sums.\nImproved answer: Sorry, I can only help with sums."
        return f"Critique: each step should be one addition, then the answer.\nImproved answer: {problem.answer()}"
    if text.startswith("Rate the answer"):
        instruction = _between(text, "Instruction:\n", "\n\nAnswer:")
        given = _between(text, "\n\nAnswer:\n", "\n\nReply with")
        return "Score: 9" if _VERIFIER.score(instruction, given) == 10 else "Score: 2"
    if text.startswith("How difficult"):
        problem = Problem.read(_between(text, "Instruction:\n", "\n\nReply with"))
        terms = len(problem.terms) if problem else 1
        return f"Score: {min(10, 2 * terms + (1 if problem and problem.steps else 0))}"
    return answer(text)


def completion(text: str, model: str) -> dict[str, Any]:
    """An OpenAI chat completion document."""
    return {
        "id": "chatcmpl-arithmetic",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 0,
            "completion_tokens": len(text.split()),
            "total_tokens": len(text.split()),
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model = "arithmetic-teacher"

    def _send(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": "the body is not JSON"})
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": "not found"})
            return
        text = reply(list(request.get("messages", [])))
        self._send(200, completion(text, str(request.get("model", self.model))))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the workloads journal every request already."""


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="arithmetic-teacher", help="the model name it reports")
    args = parser.parse_args(argv)
    _Handler.model = args.model
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    print(f"arithmetic teacher on http://{args.host}:{server.server_port}/v1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
